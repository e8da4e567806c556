//! The path rules every command shares: an output is checked, its missing folders created and
//! the temporary files of killed writers removed before any work is done, and a checkpoint argument that names a run directory means its
//! newest intact checkpoint.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Readies `out` for a command's output before the command does any work, so every command that
/// writes a file (render, eval --json, export, report) treats a path alike: [`check_output`],
/// a `.pgan` dataset is never replaced, and the temporary files of earlier commands killed while writing it are removed.
/// Returns the file a write replaces (the end of a symlink chain).
pub fn prepare_output(out: &Path, flag: &str, force: bool) -> Result<PathBuf> {
    let mut targets = prepare_outputs(&[(out, flag)], force)?;
    Ok(targets.remove(0))
}

/// [`prepare_output`] for every output of one command: all are checked before any folder is
/// made or temporary file removed, so that a refusal of the last leaves no trace of the first.
pub fn prepare_outputs(outputs: &[(&Path, &str)], force: bool) -> Result<Vec<PathBuf>> {
    let targets = outputs
        .iter()
        .map(|&(out, flag)| check_new_output(out, flag, force))
        .collect::<Result<Vec<_>>>()?;
    for (target, &(_, flag)) in targets.iter().zip(outputs) {
        if !force && std::fs::symlink_metadata(target).is_err() {
            pgan_spec::output::expect_new(target);
        }
        create_folders_above(target, flag)?;
        pgan_data::remove_stale_temps(target);
        probe_writable(target, flag)?;
    }
    Ok(targets)
}

/// Creates and removes this process's temporary file beside `target` (the one its write goes
/// through): a read-only or forbidden folder is said before the work, not after an hour of
/// it. A disk that fills up meanwhile can still fail the write.
fn probe_writable(target: &Path, flag: &str) -> Result<()> {
    let temp = pgan_data::temp_path_for(target, std::process::id());
    let folder = temp
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&temp);
            Ok(())
        }
        // A temp of this very process already there is writable ground, and not ours to remove.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => bail!(
            "{flag} {}: cannot write in {}: {e}",
            target.display(),
            folder.display()
        ),
    }
}

/// The checks of [`prepare_output`], which write nothing.
fn check_new_output(out: &Path, flag: &str, force: bool) -> Result<PathBuf> {
    let target = check_output(out, flag)?;
    if is_dataset(&target) {
        bail!(
            "{flag} {}: that is a pgan dataset; outputs do not replace datasets (remove it \
             first if that is what you mean)",
            out.display()
        );
    }
    refuse_run_file(&target, out, flag)?;
    // Whatever is there may be the user's (notes, a source image): only --force replaces it.
    if !force && std::fs::symlink_metadata(out).is_ok() {
        bail!(
            "{flag} {} already exists; pass --force to replace it",
            out.display()
        );
    }
    Ok(target)
}

/// Refuses `target` (the file a write to `out` replaces) when it is one of a run's own files:
/// no output replaces what a trainer wrote, `--force` or not.
pub fn refuse_run_file(target: &Path, out: &Path, flag: &str) -> Result<()> {
    if let Some(what) = run_file(target) {
        bail!(
            "{flag} {}: that is {what}; outputs do not replace what a trainer wrote (write \
             elsewhere)",
            out.display()
        );
    }
    Ok(())
}

/// What `target` is when it is one of a run directory's own files, whichever run (a file the
/// trainer reads back, its log or lock, or a tick's sheet in its `samples/` folder).
fn run_file(target: &Path) -> Option<String> {
    use pgan_train::run_dir::{CONFIG_FILE, LOCK_FILE, LOG_FILE, REALS_FILE, SAMPLES_DIR};
    let is_run = |dir: &Path| {
        dir.join(CONFIG_FILE).is_file()
            && dir.join(pgan_train::checkpoint::CHECKPOINTS_DIR).is_dir()
    };
    let name = target.file_name()?;
    let dir = resolved(
        target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    );
    let own = [
        pgan_spec::metrics::METRICS_FILE,
        CONFIG_FILE,
        LOG_FILE,
        LOCK_FILE,
    ];
    if is_run(&dir) && own.iter().any(|f| name == *f) {
        return Some(format!("a file of the run {}", dir.display()));
    }
    if is_run(&dir) && name == REALS_FILE {
        return Some(format!("the reals sheet of the run {}", dir.display()));
    }
    // Anywhere below a run's checkpoints/ (an abandoned branch's rows and sheets included).
    for folder in dir.ancestors() {
        let named_checkpoints = folder
            .file_name()
            .is_some_and(|n| n == pgan_train::checkpoint::CHECKPOINTS_DIR);
        if let Some(run) = folder
            .parent()
            .filter(|run| named_checkpoints && is_run(run))
        {
            return Some(format!(
                "in the checkpoints folder of the run {}",
                run.display()
            ));
        }
    }
    // The trainer's sample sheets (`tick-NNNNNN.png`); other names there are the user's, such
    // as `samples/timeline.png`, which `pgan report` shows and the quick start writes.
    let run = dir
        .parent()
        .filter(|_| dir.file_name().is_some_and(|n| n == SAMPLES_DIR))?;
    let sheet = name
        .to_str()
        .and_then(pgan_train::run_dir::sample_sheet_tick)
        .is_some();
    (sheet && is_run(run)).then(|| {
        format!(
            "a sample sheet in the samples folder of the run {}",
            run.display()
        )
    })
}

/// Refuses `out` when it could not be replaced (a folder, device, FIFO or socket, also at the
/// end of a symbolic link), lies in a checkpoint folder (whose files the trainer wrote and
/// checksummed) or has a file where a folder above it belongs. Creates nothing: the caller makes
/// the missing folders ([`create_folders_above`]) once every check has passed. `flag` names the
/// argument; the file a write replaces (the end of a symlink chain) is returned. (`prepare`
/// removes and reports its own stale temporary files.)
pub fn check_output(out: &Path, flag: &str) -> Result<PathBuf> {
    let target = pgan_spec::output::replaceable_file(out)
        .with_context(|| format!("{flag} {}", out.display()))?;
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty());
    // The folder and every folder above it (a checkpoint's subfolder is pruned with it).
    let existing = resolved(parent.unwrap_or(Path::new(".")));
    if existing
        .ancestors()
        .any(|dir| std::fs::symlink_metadata(dir.join(pgan_train::checkpoint::STATE_FILE)).is_ok())
    {
        bail!(
            "{flag} {}: that folder is a checkpoint (it holds {}); its files are the trainer's, \
             write outputs elsewhere",
            out.display(),
            pgan_train::checkpoint::STATE_FILE
        );
    }
    if let Some(parent) = parent {
        // `create_dir_all` reports a file in the way as "File exists", naming the folder.
        if let Some(file) = parent
            .ancestors()
            .find(|a| std::fs::metadata(a).is_ok_and(|m| !m.is_dir()))
        {
            bail!(
                "{flag} {}: {} is a file, not a folder",
                out.display(),
                file.display()
            );
        }
    }
    Ok(target)
}

/// Creates the folders above `target` (an output [`check_output`] accepted) that do not exist.
pub fn create_folders_above(target: &Path, flag: &str) -> Result<()> {
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        // The folders that do not exist yet, outermost first, remembered so that a command
        // that then fails (its checkpoint corrupt, its run missing) leaves none behind.
        let missing: Vec<PathBuf> = parent
            .ancestors()
            .take_while(|dir| {
                !dir.as_os_str().is_empty() && std::fs::symlink_metadata(dir).is_err()
            })
            .map(Path::to_path_buf)
            .collect();
        std::fs::create_dir_all(parent)
            .with_context(|| format!("{flag}: cannot create the folder {}", parent.display()))?;
        CREATED_FOLDERS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(missing.into_iter().rev());
    }
    Ok(())
}

/// Folders this process created for its outputs, in the order they were made.
static CREATED_FOLDERS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Removes the folders [`create_folders_above`] made that are still empty, innermost first: a
/// command that failed leaves no trace of the outputs it never wrote.
pub fn remove_created_folders() {
    let mut created = CREATED_FOLDERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    while let Some(dir) = created.pop() {
        // Fails, and so keeps the folder, when anything was written into it.
        let _ = std::fs::remove_dir(&dir);
    }
}

/// Whether `path` is a file that starts as a `.pgan` pyramid does.
fn is_dataset(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; pgan_data::format::MAGIC.len()];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == pgan_data::format::MAGIC)
}

/// `dir` with its deepest existing ancestor resolved (symlinks, `..`); the part that does not
/// exist yet is appended as written.
fn resolved(dir: &Path) -> PathBuf {
    let mut tail = Vec::new();
    let mut head = dir;
    loop {
        if let Ok(real) = std::fs::canonicalize(head) {
            return tail.iter().rev().fold(real, |path, part| path.join(part));
        }
        match (head.parent(), head.file_name()) {
            (Some(up), Some(name)) => {
                tail.push(name.to_owned());
                head = if up.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    up
                };
            }
            _ => return dir.to_path_buf(),
        }
    }
}

/// Whether two output paths name one file however they are spelled (`./x`, an absolute path,
/// a symbolic link to it).
pub fn same_file(a: &Path, b: &Path) -> bool {
    let real = |p: &Path| {
        let target = pgan_spec::output::replaceable_file(p).unwrap_or_else(|_| p.to_path_buf());
        let dir = target.parent().filter(|d| !d.as_os_str().is_empty());
        let name = target.file_name()?.to_owned();
        Some(resolved(dir.unwrap_or(Path::new("."))).join(name))
    };
    a == b || real(a).is_some_and(|real_a| Some(real_a) == real(b))
}

/// Refuses `out` when it is the same file as one of the command's `inputs` (what each is, its
/// path), or is named as an image inside an input that is a folder (an image folder): an output
/// written there would replace an image the command read, or join them next time. Other files
/// there (`fid.json` beside the images) are never read as images.
pub fn refuse_inputs(out: &Path, flag: &str, inputs: &[(&str, PathBuf)]) -> Result<()> {
    for (what, input) in inputs {
        if same_file(out, input) {
            bail!(
                "{flag} {}: that is {what} ({}); an output must not replace an input",
                out.display(),
                input.display()
            );
        }
        if input.is_dir() {
            let folder = resolved(input);
            let target = pgan_spec::output::replaceable_file(out).unwrap_or_else(|_| out.into());
            let parent = target.parent().filter(|d| !d.as_os_str().is_empty());
            if pgan_data::has_image_extension(&target)
                && resolved(parent.unwrap_or(Path::new("."))).starts_with(&folder)
            {
                bail!(
                    "{flag} {}: an image inside {what} ({}), whose images are read; write \
                     outputs elsewhere",
                    out.display(),
                    input.display()
                );
            }
        }
    }
    Ok(())
}

/// The checkpoint `source` means (a checkpoint folder, or a run directory's newest checkpoint
/// that passes its checks); each newer one skipped as corrupt is a warning on stderr.
pub fn checkpoint_of(source: &Path) -> Result<PathBuf> {
    let found = pgan_train::checkpoint::find_checkpoint(source)?;
    let foreign = pgan_train::checkpoint::foreign_to_its_run(&found.path);
    for warning in found.warnings().into_iter().chain(foreign) {
        tell!("warning: {warning}");
    }
    Ok(found.path)
}

/// How often [`on_checkpoint_of`] reads a run whose newest checkpoint its trainer prunes under
/// it.
const READS_OF_A_PRUNED_RUN: usize = 3;

/// Runs `work` on `ckpt`, the checkpoint `source` means ([`checkpoint_of`]); when that was a
/// run's newest and the trainer pruned it while `work` read it (`run.keep_checkpoints`), on
/// the run's newest again.
pub fn on_checkpoint_of<T>(
    source: &Path,
    mut ckpt: PathBuf,
    mut work: impl FnMut(&Path) -> Result<T>,
) -> Result<T> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        if attempts > 1 {
            ckpt = checkpoint_of(source)?;
        }
        match work(&ckpt) {
            Err(e) if pruned_under(source, &ckpt) => {
                if attempts == READS_OF_A_PRUNED_RUN {
                    return Err(e.context(format!(
                        "{} was pruned by its trainer while it was read, {READS_OF_A_PRUNED_RUN} times over \
                         (run.keep_checkpoints): name one of the run's checkpoints",
                        ckpt.display()
                    )));
                }
            }
            done => return done,
        }
    }
}

/// Whether `ckpt`, the newest checkpoint of the run folder `source`, is gone (a live trainer
/// pruned it).
pub fn pruned_under(source: &Path, ckpt: &Path) -> bool {
    !ckpt.exists()
        && source
            .join(pgan_train::checkpoint::CHECKPOINTS_DIR)
            .is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_output_folders_are_created() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a/b/c.json");
        prepare_output(&out, "--json", false).unwrap();
        assert!(dir.path().join("a/b").is_dir());
        prepare_output(Path::new("c.json"), "--json", false).unwrap();
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, b"x").unwrap();
        let err = prepare_output(&blocked.join("c.json"), "--out", false).unwrap_err();
        assert!(
            format!("{err:#}").ends_with(&format!("{} is a file, not a folder", blocked.display())),
            "{err:#}"
        );
    }

    #[test]
    fn an_output_in_a_folder_that_takes_no_file_is_refused_before_any_work() {
        // /proc takes no new file, even from root (a chmod'ed folder would not stop root).
        let err = prepare_output(Path::new("/proc/pgan-out.png"), "--out", false).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "--out /proc/pgan-out.png: cannot write in /proc: No such file or directory (os error 2)"
        );
        // A writable folder keeps no probe behind.
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sheet.png");
        prepare_output(&out, "--out", false).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn outputs_that_are_not_regular_files_or_lie_in_a_checkpoint_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = prepare_output(dir.path(), "--out", false).unwrap_err();
        assert!(
            format!("{err:#}")
                .ends_with("it is a folder, not a regular file (pgan only replaces regular files)"),
            "{err:#}"
        );
        let link = dir.path().join("full.png");
        std::os::unix::fs::symlink("/dev/full", &link).unwrap();
        let err = prepare_output(&link, "--out", false).unwrap_err();
        assert!(format!("{err:#}").contains("it links to /dev/full, a character device"));
        let ckpt = dir.path().join("ckpt-000000000064");
        std::fs::create_dir(&ckpt).unwrap();
        std::fs::write(ckpt.join("state.json"), b"{}").unwrap();
        let err = prepare_output(&ckpt.join("generator_ema.mpk"), "--out", false).unwrap_err();
        assert!(
            format!("{err:#}").contains("that folder is a checkpoint"),
            "{err:#}"
        );
        let err = prepare_output(&ckpt.join("new/sub/x.png"), "--out", false).unwrap_err();
        assert!(
            format!("{err:#}").contains("that folder is a checkpoint"),
            "{err:#}"
        );
        assert!(!ckpt.join("new").exists());
        std::fs::create_dir(dir.path().join("other")).unwrap();
        let dotted = dir.path().join("other/../ckpt-000000000064/x.png");
        assert!(prepare_output(&dotted, "--out", false).is_err());
        prepare_output(&dir.path().join("other/x.png"), "--out", false).unwrap();
    }

    /// An existing file (the user's notes, a source image) is replaced only with --force; an
    /// output refused because it lies below a run's checkpoints/ makes no folder there.
    #[test]
    fn existing_files_are_replaced_only_with_force_and_refusals_create_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let notes = dir.path().join("notes.txt");
        std::fs::write(&notes, b"mine").unwrap();
        let err = prepare_output(&notes, "--out", false).unwrap_err();
        assert!(
            format!("{err:#}").ends_with("already exists; pass --force to replace it"),
            "{err:#}"
        );
        assert_eq!(std::fs::read(&notes).unwrap(), b"mine");
        prepare_output(&notes, "--out", true).unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(run.join("checkpoints")).unwrap();
        std::fs::write(run.join("config.toml"), b"").unwrap();
        let inside = run.join("checkpoints/ckpt-000000009999/a/x.png");
        let err = prepare_output(&inside, "--out", true).unwrap_err();
        assert!(
            format!("{err:#}").contains("in the checkpoints folder of the run"),
            "{err:#}"
        );
        assert!(!run.join("checkpoints/ckpt-000000009999").exists());
    }

    #[test]
    fn one_file_is_recognised_however_it_is_spelled() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("y.png");
        std::fs::write(&file, b"x").unwrap();
        let link = dir.path().join("link.png");
        std::os::unix::fs::symlink("y.png", &link).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let dotted = dir.path().join("sub/../y.png");
        assert!(same_file(&file, &link));
        assert!(same_file(&file, &dotted));
        assert!(same_file(&file, &file));
        assert!(!same_file(&file, &dir.path().join("z.png")));
        // Not written yet: compared by the folder that exists and the name.
        assert!(same_file(
            &dir.path().join("new/a.npy"),
            &dir.path().join("sub/../new/a.npy")
        ));
    }
}
