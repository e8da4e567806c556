//! The names of the files a trainer writes into its run directory that other crates read back
//! (the report finds the sample sheets by them, and leaves the user's own images alone).

/// Folder of sample grids inside a run directory.
pub const SAMPLES_DIR: &str = "samples";

/// The file name of tick `tick`'s sample sheet in [`SAMPLES_DIR`].
pub fn sample_sheet_name(tick: u64) -> String {
    format!("tick-{tick:06}.png")
}

/// The tick of a sample sheet's file name (`tick-` digits `.png`), when it is one.
pub fn sample_sheet_tick(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("tick-")?.strip_suffix(".png")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheet_names_and_ticks_round_trip_and_other_names_are_none() {
        for tick in [0, 7, 123_456, 9_999_999] {
            assert_eq!(sample_sheet_tick(&sample_sheet_name(tick)), Some(tick));
        }
        for other in [
            "tick-.png",
            "tick-12a.png",
            "upscaled-x4.png",
            "tick-1.PNG",
            "reals.png",
        ] {
            assert_eq!(sample_sheet_tick(other), None, "{other}");
        }
    }
}
