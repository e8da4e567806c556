//! Parsing `--seeds`: ranges and lists, `0-47`, `3,14,15`, or both `0-3,9`.

/// The seeds named by `spec`, in order.
pub fn parse_seeds(spec: &str) -> Result<Vec<u64>, String> {
    if spec.trim().is_empty() {
        return Err("no seeds given".into());
    }
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim) {
        if part.is_empty() {
            // "1,,2" or a trailing comma: a seed left out, perhaps "1,12" mistyped.
            return Err(format!("'{spec}' has an empty seed between commas"));
        }
        match part.split_once('-') {
            Some((a, b)) => {
                let a: u64 = a
                    .trim()
                    .parse()
                    .map_err(|_| format!("'{part}' is not a seed range like 0-47"))?;
                let b: u64 = b
                    .trim()
                    .parse()
                    .map_err(|_| format!("'{part}' is not a seed range like 0-47"))?;
                if b < a {
                    return Err(format!("seed range '{part}' runs backwards"));
                }
                if b - a >= 100_000 {
                    return Err(format!("seed range '{part}' is too long"));
                }
                out.extend(a..=b);
            }
            None => out.push(
                part.parse()
                    .map_err(|_| format!("'{part}' is not a seed"))?,
            ),
        }
    }
    if out.is_empty() {
        return Err("no seeds given".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_lists_and_mixtures() {
        assert_eq!(parse_seeds("0-3").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_seeds("3,14,15").unwrap(), vec![3, 14, 15]);
        assert_eq!(parse_seeds("0-1, 9").unwrap(), vec![0, 1, 9]);
        assert!(parse_seeds("5-2").is_err());
        assert!(parse_seeds("x").is_err());
        assert!(parse_seeds("").is_err());
        for typo in ["1,,2", "1,2,", ","] {
            let err = parse_seeds(typo).unwrap_err();
            assert!(err.contains("empty seed"), "{typo}: {err}");
        }
    }
}
