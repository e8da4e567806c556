//! A pass over a module pickle before burn-store's VM builds it, refusing what would crash the
//! VM's process instead of failing in it.
//!
//! The VM builds nested values (`Object`), dropped and cloned recursively, and its memo stores
//! and hands out deep copies. A small crafted pickle can therefore nest a list a million deep
//! (two bytes a level: the drop overflows the stack and aborts) or copy copies of an object
//! until memory runs out (each `BINGET` of a twice-used object doubles it). This pass follows the
//! VM's opcodes with only each object's nesting depth and size, and refuses a pickle whose
//! objects nest deeper than [`MAX_DEPTH`] or whose memo copies exceed [`copy_budget`]. A real
//! module pickle nests a few levels per submodule and memoizes objects while they are still
//! empty, so it stays far inside both.
//!
//! Only the opcodes the VM accepts are followed; at any other byte, and wherever the VM would
//! fail (a truncated argument, an empty stack, a missing mark or memo entry), the pass stops
//! and leaves the error to the VM, which reads the same bytes in the same order.

use std::collections::HashMap;

/// The deepest nesting accepted: far above a module tree's, far below what overflows a stack.
pub(crate) const MAX_DEPTH: u32 = 512;

/// How much the memo may copy (in objects, a string counting one per 16 bytes): generous for
/// a pickle of `pickle_len` bytes that memoizes as Python's pickler does, far below a bomb's.
pub(crate) fn copy_budget(pickle_len: usize) -> u64 {
    (1 << 22) + 16 * pickle_len as u64
}

/// An object as the pass sees it: how deep it nests and how many objects it holds.
#[derive(Clone, Copy, Debug, Default)]
struct Extent {
    depth: u32,
    size: u64,
}

impl Extent {
    fn leaf(payload: usize) -> Self {
        Self {
            depth: 0,
            size: 1 + payload as u64 / 16,
        }
    }

    /// `self` with `inner` put inside it.
    fn holding(self, inner: Extent) -> Self {
        Self {
            depth: self.depth.max(inner.depth.saturating_add(1)),
            size: self.size.saturating_add(inner.size),
        }
    }

    /// A new container of `items`.
    fn of(items: impl IntoIterator<Item = Extent>) -> Self {
        items
            .into_iter()
            .fold(Self { depth: 1, size: 1 }, Self::holding)
    }
}

enum Slot {
    Mark,
    Object(Extent),
}

/// Why the pass refuses `pickle`, or `Ok` when the VM may build it.
pub(crate) fn check(pickle: &[u8]) -> Result<(), String> {
    let budget = copy_budget(pickle.len());
    let mut copied = 0u64;
    let mut stack: Vec<Slot> = Vec::new();
    let mut memo: HashMap<u32, Extent> = HashMap::new();
    let mut at = 0usize;
    // Each `None` below is a place where the VM fails on its own.
    let walked = (|| -> Option<Result<(), String>> {
        loop {
            let op = *pickle.get(at)?;
            at += 1;
            let mut take = |n: usize| -> Option<&[u8]> {
                let bytes = pickle.get(at..at.checked_add(n)?)?;
                at += n;
                Some(bytes)
            };
            let pop = |stack: &mut Vec<Slot>| match stack.pop()? {
                Slot::Object(extent) => Some(extent),
                Slot::Mark => None,
            };
            let pop_to_mark = |stack: &mut Vec<Slot>| {
                let mark = stack.iter().rposition(|s| matches!(s, Slot::Mark))?;
                let items: Vec<Extent> = stack
                    .drain(mark..)
                    .filter_map(|s| match s {
                        Slot::Object(e) => Some(e),
                        Slot::Mark => None,
                    })
                    .collect();
                Some(items)
            };
            let made = match op {
                b'.' => return Some(Ok(())),
                0x80 => {
                    take(1)?;
                    None
                }
                b'(' => {
                    stack.push(Slot::Mark);
                    None
                }
                // GLOBAL: module and name, each a line.
                b'c' => {
                    let rest = pickle.get(at..)?;
                    let first = rest.iter().position(|&b| b == b'\n')?;
                    let second = rest[first + 1..].iter().position(|&b| b == b'\n')?;
                    at += first + second + 2;
                    Some(Extent::leaf(first + second))
                }
                b'I' => {
                    let line = pickle.get(at..)?.iter().position(|&b| b == b'\n')?;
                    at += line + 1;
                    Some(Extent::leaf(0))
                }
                b'J' => take(4).map(|_| Extent::leaf(0)),
                b'K' => take(1).map(|_| Extent::leaf(0)),
                b'M' => take(2).map(|_| Extent::leaf(0)),
                b'G' => take(8).map(|_| Extent::leaf(0)),
                b'X' => {
                    let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
                    take(len).map(|_| Extent::leaf(len))
                }
                b'U' | 0x8a => {
                    let len = take(1)?[0] as usize;
                    take(len).map(|_| Extent::leaf(len))
                }
                b'N' | 0x88 | 0x89 => Some(Extent::leaf(0)),
                b')' | b']' | b'}' => Some(Extent::of([])),
                b't' | b'l' | b'd' => Some(Extent::of(pop_to_mark(&mut stack)?)),
                0x85 => Some(Extent::of([pop(&mut stack)?])),
                0x86 => Some(Extent::of([pop(&mut stack)?, pop(&mut stack)?])),
                0x87 => Some(Extent::of([
                    pop(&mut stack)?,
                    pop(&mut stack)?,
                    pop(&mut stack)?,
                ])),
                // REDUCE, NEWOBJ: a callable or class and its arguments become one object.
                b'R' | 0x81 => Some(Extent::of([pop(&mut stack)?, pop(&mut stack)?])),
                // BINPERSID: a persistent id becomes a tensor (or another object).
                b'Q' => Some(Extent::of([pop(&mut stack)?])),
                // APPEND, BUILD: one object into the one below it.
                b'a' | b'b' => {
                    let inner = pop(&mut stack)?;
                    let outer = pop(&mut stack)?;
                    Some(outer.holding(inner))
                }
                // SETITEM: a key and a value into the dict below them.
                b's' => {
                    let value = pop(&mut stack)?;
                    let key = pop(&mut stack)?;
                    let dict = pop(&mut stack)?;
                    Some(dict.holding(key).holding(value))
                }
                // APPENDS, SETITEMS: everything above the mark into the object below it.
                b'e' | b'u' => {
                    let items = pop_to_mark(&mut stack)?;
                    let outer = pop(&mut stack)?;
                    Some(items.into_iter().fold(outer, Extent::holding))
                }
                // BINPUT, LONG_BINPUT, MEMOIZE: the memo stores a copy of the top.
                b'q' | b'r' | 0x94 => {
                    let index = match op {
                        b'q' => u32::from(take(1)?[0]),
                        b'r' => u32::from_le_bytes(take(4)?.try_into().ok()?),
                        _ => u32::try_from(memo.len()).ok()?,
                    };
                    let top = match stack.last()? {
                        Slot::Object(extent) => *extent,
                        Slot::Mark => Extent::leaf(0),
                    };
                    copied = copied.saturating_add(top.size);
                    memo.insert(index, top);
                    None
                }
                // BINGET, LONG_BINGET: a copy of a memo entry.
                b'h' | b'j' => {
                    let index = match op {
                        b'h' => u32::from(take(1)?[0]),
                        _ => u32::from_le_bytes(take(4)?.try_into().ok()?),
                    };
                    let entry = *memo.get(&index)?;
                    copied = copied.saturating_add(entry.size);
                    Some(entry)
                }
                // An opcode the VM does not accept: it stops there.
                _ => return None,
            };
            if copied > budget {
                return Some(Err(format!(
                    "its memo copies more than {budget} objects by byte {at} (a pickle bomb: a \
                     module pickle copies a few small objects)"
                )));
            }
            if let Some(extent) = made {
                if extent.depth > MAX_DEPTH {
                    return Some(Err(format!(
                        "its objects nest more than {MAX_DEPTH} deep by byte {at} (a module \
                         pickle nests a few levels per submodule)"
                    )));
                }
                stack.push(Slot::Object(extent));
            }
        }
    })();
    walked.unwrap_or(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protocol 2, `ops`, STOP.
    fn pickle(ops: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0x80, 2];
        bytes.extend_from_slice(ops);
        bytes.push(b'.');
        bytes
    }

    #[test]
    fn a_list_nested_past_the_limit_is_refused_and_one_inside_it_passes() {
        let nested = |levels: usize| {
            let mut ops = vec![b']'; levels];
            ops.extend(std::iter::repeat_n(b'a', levels - 1));
            pickle(&ops)
        };
        assert_eq!(check(&nested(MAX_DEPTH as usize)), Ok(()));
        let err = check(&nested(MAX_DEPTH as usize + 1)).unwrap_err();
        assert!(err.contains("nest more than 512 deep"), "{err}");
        // The depth an earlier version of the reader aborted on, in 400 KB.
        assert!(check(&nested(200_000)).is_err());
    }

    #[test]
    fn memo_copies_that_double_are_refused() {
        // [] then, 40 times: the memo's object twice in a tuple, memoized again.
        let mut ops = vec![b']', b'q', 0];
        for _ in 0..40 {
            ops.extend_from_slice(&[b'h', 0, b'h', 0, 0x86, b'q', 0]);
        }
        let err = check(&pickle(&ops)).unwrap_err();
        assert!(err.contains("memo copies more than"), "{err}");
        // A memo used as Python's pickler uses it: a string put once and fetched often.
        let mut ops = vec![b'(', b'X', 5, 0, 0, 0];
        ops.extend_from_slice(b"hello");
        ops.extend_from_slice(&[b'q', 1]);
        for _ in 0..10_000 {
            ops.extend_from_slice(&[b'h', 1]);
        }
        ops.push(b'l');
        assert_eq!(check(&pickle(&ops)), Ok(()));
    }

    #[test]
    fn what_the_vm_itself_rejects_is_left_to_it() {
        for ops in [
            &b"a"[..],            // an empty stack
            b"]e",                // no mark
            b"h\x07",             // no memo entry 7
            b"X\xff\xff\xff\xff", // a string past the end
            b"\xff",              // an opcode the VM does not know
        ] {
            assert_eq!(check(&pickle(ops)), Ok(()), "{ops:?}");
        }
    }
}
