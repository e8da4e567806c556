//! Notices, at each tick end and before a stop's checkpoint, a dataset file that changed on disk
//! while training reads it.
//!
//! Training reads the `.pgan` file through a memory map. A file replaced at its path (`pgan
//! prepare` renames a new file into place; `mv`; a link pointed elsewhere) leaves the mapped one
//! readable: the run goes on with the images it started with, and is told so once. A file
//! written in place without being shortened (`dd conv=notrunc`, a tool that edits it) shows its
//! new bytes through the map at once: the steps since then may have read a mix of two datasets,
//! which no resume would notice in the weights. The run stops with an error naming the file,
//! unless the header and every level the run reads still match their checksums (the same bytes
//! written again). A shortened file (`cp` over it truncates first) is the map guard's
//! (`pgan_data::map_guard`) clear exit. The watch goes by the file's time and length: a write
//! within the file system's time resolution of the last look may go unseen.

use std::path::PathBuf;

use pgan_data::{FileStamp, PyramidReader};

use crate::error::{Result, TrainError};
use crate::limits::LEVEL_CHECK_BYTES;

/// The dataset file as the run last accepted it.
#[derive(Debug)]
pub struct DatasetWatch {
    /// The path a resume reads (links resolved, as `config.toml` records it).
    path: PathBuf,
    /// The levels the run reads: up to the model's resolution.
    max_resolution: u32,
    accepted: FileStamp,
    replaced_told: bool,
}

impl DatasetWatch {
    /// Watches the file `reader` opened, from the moment it opened it, for a run that reads its
    /// levels up to `max_resolution`.
    pub fn new(reader: &PyramidReader, max_resolution: u32) -> Self {
        DatasetWatch {
            path: std::fs::canonicalize(reader.path()).unwrap_or_else(|_| reader.path().into()),
            max_resolution,
            accepted: reader.opened_stamp(),
            replaced_told: false,
        }
    }

    /// Looks at the file: `warn` hears of a change training goes on through (nothing when
    /// nothing is new); a file whose images changed under the run is an error.
    pub fn check(&mut self, reader: &PyramidReader, warn: &mut dyn FnMut(String)) -> Result<()> {
        let path = &self.path;
        let at_path = FileStamp::of_path(path);
        if !self.replaced_told && !at_path.is_some_and(|now| now.same_file(&self.accepted)) {
            self.replaced_told = true;
            warn(format!(
                "{}: the dataset was removed or replaced on disk while training: this run goes \
                 on with the file it opened (readable while it is open); a resume reads what \
                 is at that path then, and refuses other images",
                path.display()
            ));
        }
        // The opened file itself, wherever its path points now.
        let now = reader.stamp_now().map_err(|e| TrainError::Dataset {
            path: path.clone(),
            message: format!(
                "the open file can no longer be looked at ({e}): on a network file system, \
                 another machine removed it; the run stops here (resume once the file is back)"
            ),
        })?;
        if now == self.accepted {
            return Ok(());
        }
        let rewritten = |what: String| TrainError::Dataset {
            path: path.clone(),
            message: format!(
                "written in place while training: {what}. The steps since the last checkpoint \
                 may have read a mix of old and new images, so the run stops here: put the \
                 original file back and resume, or prepare the new images into another file \
                 for a new run"
            ),
        };
        match reader.header_now() {
            Err(e) => return Err(rewritten(format!("its header no longer reads ({e})"))),
            Ok(header) if header != *reader.header() => {
                return Err(rewritten(
                    "its header changed (image count, levels or their checksums)".into(),
                ))
            }
            Ok(_) => {}
        }
        let r = self.max_resolution;
        let read = reader.levels_len(|level| level <= r);
        self.accepted = now;
        if read > LEVEL_CHECK_BYTES {
            warn(format!(
                "{}: the dataset was written to while training; its header is unchanged, but its \
                 levels up to {r}x{r} ({:.1} GiB) are too large to check at every change, so \
                 training goes on unchecked: `pgan verify` checks them",
                path.display(),
                read as f64 / (1u64 << 30) as f64
            ));
            return Ok(());
        }
        reader
            .verify_levels_up_to(r)
            .map_err(|e| rewritten(e.to_string()))?;
        warn(format!(
            "{}: the dataset was written to while training, but its header and its levels up to \
             {r}x{r} still match their checksums: training goes on",
            path.display()
        ));
        Ok(())
    }
}
