//! Notices, once a tick, a dataset file that changed on disk while training reads it.
//!
//! Training reads the `.pgan` file through a memory map. A file replaced at its path (`pgan
//! prepare` renames a new file into place; `mv`, `cp` to a temporary and rename) leaves the
//! mapped one readable: the run goes on with the images it started with, and is told so once.
//! A file written in place (`cp` over it, a tool that edits it) shows its new bytes through the
//! map at once: the steps since then may have read a mix of two datasets, which no resume would
//! notice in the weights. The run stops with an error naming the file, unless the header and
//! every level it trains on still match their checksums (the same bytes written again), and a
//! shrunk file is the map guard's (`pgan_data::map_guard`) clear exit.

use pgan_data::{FileStamp, PyramidReader};

use crate::error::{Result, TrainError};
use crate::limits::LEVEL_CHECK_BYTES;

/// The dataset file as the run last accepted it.
#[derive(Debug)]
pub struct DatasetWatch {
    accepted: FileStamp,
    replaced_told: bool,
}

impl DatasetWatch {
    /// Watches the file `reader` opened, from the moment it opened it.
    pub fn new(reader: &PyramidReader) -> Self {
        DatasetWatch {
            accepted: reader.opened_stamp(),
            replaced_told: false,
        }
    }

    /// What changed since the last look, for training at `resolution`: warnings for changes
    /// training goes on through (none when nothing new), an error for a file whose images
    /// changed under the run.
    pub fn check(&mut self, reader: &PyramidReader, resolution: u32) -> Result<Vec<String>> {
        let path = reader.path();
        let mut warnings = Vec::new();
        let at_path = FileStamp::of_path(path);
        if !self.replaced_told && !at_path.is_some_and(|now| now.same_file(&self.accepted)) {
            self.replaced_told = true;
            warnings.push(format!(
                "{}: the dataset was removed or replaced on disk while training: this run goes \
                 on with the file it opened (readable while it is open); a resume reads what \
                 is at that path then, and refuses other images",
                path.display()
            ));
        }
        // The opened file itself, wherever its path points now.
        let now = reader.stamp_now().map_err(|e| TrainError::Dataset {
            path: path.to_path_buf(),
            message: format!("cannot look at the open file: {e}"),
        })?;
        if now == self.accepted {
            return Ok(warnings);
        }
        let rewritten = |what: String| TrainError::Dataset {
            path: path.to_path_buf(),
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
        let read: u64 = reader
            .header()
            .levels
            .iter()
            .filter(|l| l.resolution <= resolution)
            .map(|l| l.length)
            .sum();
        self.accepted = now;
        if read > LEVEL_CHECK_BYTES {
            warnings.push(format!(
                "{}: the dataset was written to while training; its header is unchanged, but \
                 its levels up to {resolution}x{resolution} ({:.1} GiB) are too large to check \
                 at every change: `pgan verify` checks them",
                path.display(),
                read as f64 / (1u64 << 30) as f64
            ));
            return Ok(warnings);
        }
        reader
            .verify_levels_up_to(resolution)
            .map_err(|e| rewritten(e.to_string()))?;
        warnings.push(format!(
            "{}: the dataset was written to while training, but its header and its levels up to \
             {resolution}x{resolution} still match their checksums: training goes on",
            path.display()
        ));
        Ok(warnings)
    }
}
