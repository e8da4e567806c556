//! Parsing `--seeds`: ranges and lists, `0-47`, `3,14,15`, or both `0-3,9`.

/// The most seeds a `--seeds` names where no sheet's cells bound them (an interpolation, a
/// timeline): they are listed before anything else is checked, so this bounds the list.
pub const MAX_SEEDS: usize = 100_000;

/// Why a `--seeds` was refused.
#[derive(Debug, PartialEq)]
pub enum SeedsError {
    /// Not a list of seeds and ranges (the message says where).
    Invalid(String),
    /// It names more seeds than the caller's limit.
    TooMany {
        /// How many it names (counted, not listed; `0-18446744073709551615` names 2^64).
        count: u128,
        /// The limit passed to [`parse_seeds`].
        max: usize,
    },
}

impl std::fmt::Display for SeedsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeedsError::Invalid(message) => f.write_str(message),
            SeedsError::TooMany { count, max } => {
                write!(f, "it names {count} seeds; at most {max} are taken")
            }
        }
    }
}

impl std::error::Error for SeedsError {}

/// The seeds named by `spec`, in order: at most `max` of them. Past `max` the rest are only
/// counted, so a long argument of long ranges is never listed whole.
pub fn parse_seeds(spec: &str, max: usize) -> Result<Vec<u64>, SeedsError> {
    let invalid = |message: String| Err(SeedsError::Invalid(message));
    if spec.trim().is_empty() {
        return invalid("no seeds given".into());
    }
    let mut out = Vec::new();
    // Seeds named so far; past `max`, nothing more is listed.
    let mut count: u128 = 0;
    for part in spec.split(',').map(str::trim) {
        if part.is_empty() {
            // "1,,2" or a trailing comma: a seed left out, perhaps "1,12" mistyped.
            return invalid(format!("'{spec}' has an empty seed between commas"));
        }
        match part.split_once('-') {
            Some((a, b)) => {
                let (Ok(a), Ok(b)) = (a.trim().parse::<u64>(), b.trim().parse::<u64>()) else {
                    return invalid(format!("'{part}' is not a seed range like 0-47"));
                };
                if b < a {
                    return invalid(format!("seed range '{part}' runs backwards"));
                }
                count += u128::from(b - a) + 1;
                if count <= max as u128 {
                    out.extend(a..=b);
                }
            }
            None => {
                let Ok(seed) = part.parse() else {
                    return invalid(format!("'{part}' is not a seed"));
                };
                count += 1;
                if count <= max as u128 {
                    out.push(seed);
                }
            }
        }
    }
    if count > max as u128 {
        return Err(SeedsError::TooMany { count, max });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> Result<Vec<u64>, SeedsError> {
        parse_seeds(spec, MAX_SEEDS)
    }

    #[test]
    fn ranges_lists_and_mixtures() {
        assert_eq!(parse("0-3").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse("3,14,15").unwrap(), vec![3, 14, 15]);
        assert_eq!(parse("0-1, 9").unwrap(), vec![0, 1, 9]);
        assert!(parse("5-2").is_err());
        assert!(parse("x").is_err());
        assert!(parse("").is_err());
        for typo in ["1,,2", "1,2,", ","] {
            let err = parse(typo).unwrap_err().to_string();
            assert!(err.contains("empty seed"), "{typo}: {err}");
        }
    }

    #[test]
    fn no_more_seeds_than_the_limit_are_listed() {
        assert_eq!(parse_seeds("0-3,7", 5).unwrap(), vec![0, 1, 2, 3, 7]);
        let too_many = |count| Err(SeedsError::TooMany { count, max: 5 });
        assert_eq!(parse_seeds("0-3,7,8", 5), too_many(6));
        assert_eq!(parse_seeds("1,0-4", 5), too_many(6));
        assert_eq!(parse_seeds("0-4", 5).unwrap().len(), 5);
        // Counted to the end, so the message says how many: u64's whole range is 2^64 seeds.
        let whole = format!("0-{}", u64::MAX);
        let err = parse(&whole).unwrap_err();
        assert_eq!(
            err,
            SeedsError::TooMany {
                count: 1 << 64,
                max: MAX_SEEDS
            }
        );
        assert!(
            err.to_string().contains("18446744073709551616 seeds"),
            "{err}"
        );
        // Many long ranges (1.6 billion seeds, 13 GB listed): counted, not listed.
        let many = vec!["0-99999"; 16_000].join(",");
        assert_eq!(
            parse(&many).unwrap_err().to_string(),
            "it names 1600000000 seeds; at most 100000 are taken"
        );
        // A bad part after the limit is still named.
        assert!(matches!(
            parse_seeds("0-9,x", 5),
            Err(SeedsError::Invalid(_))
        ));
    }
}
