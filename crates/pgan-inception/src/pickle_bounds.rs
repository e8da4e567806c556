//! A pass over a module pickle before burn-store's VM builds it, refusing what would crash the
//! VM's process instead of failing in it.
//!
//! The VM builds nested values (`Object`), dropped and cloned recursively, and its memo stores
//! and hands out deep copies. A small crafted pickle can therefore nest a list a million deep
//! (two bytes a level: the drop overflows the stack and aborts) or copy copies of an object
//! until memory runs out (each `BINGET` of a twice-used object doubles it; a `REDUCE` of nested
//! `_rebuild_from_type_v2` calls clones its arguments once per level). This pass follows the
//! VM's opcodes with only each object's nesting depth and size, and refuses a pickle whose
//! objects nest deeper than [`MAX_DEPTH`] or whose copies (the memo's, and the VM's clones of a
//! `REDUCE`'s arguments and a `DICT`'s items) exceed [`MAX_COPIED_BYTES`]. A real module pickle
//! nests a few levels per submodule, memoizes objects while they are still empty and reduces
//! small argument tuples, so it stays far inside both.
//!
//! Only the opcodes the VM accepts are followed, with its marks as it has them (an ordinary
//! object named `mark.mark`, which a `GLOBAL` can also make, the memo keep and a tuple hold). A
//! pickle the pass cannot follow to its `STOP` (another opcode, a truncated argument, an empty
//! stack, a missing mark or memo entry) is refused too: the VM would fail on it or, where the
//! two disagree, build what the pass did not see.

use std::collections::HashMap;

use burn_store::pytorch::pickle_reader::Object;

/// The deepest nesting accepted: far above a module tree's, far below what overflows a stack.
pub(crate) const MAX_DEPTH: u32 = 512;

/// The most the VM may copy, in bytes of its objects: far above what a module pickle copies
/// (small objects, memoized while empty; small argument tuples), far below a bomb's.
pub(crate) const MAX_COPIED_BYTES: u64 = 256 << 20;

/// The size of one of the VM's objects, without what it owns on the heap.
const OBJECT_BYTES: u64 = std::mem::size_of::<Object>() as u64;

/// An object as the pass sees it: how deep it nests and how many bytes it holds.
#[derive(Clone, Copy, Debug)]
struct Extent {
    depth: u32,
    size: u64,
    /// The VM's mark: an object like any other, except to the opcodes that pop to it.
    mark: bool,
}

impl Extent {
    fn leaf(payload: usize) -> Self {
        Self {
            depth: 0,
            size: OBJECT_BYTES + payload as u64,
            mark: false,
        }
    }

    fn mark() -> Self {
        Self {
            mark: true,
            ..Self::leaf(8)
        }
    }

    /// `self` with `inner` put inside it.
    fn holding(self, inner: Extent) -> Self {
        Self {
            depth: self.depth.max(inner.depth.saturating_add(1)),
            size: self.size.saturating_add(inner.size),
            mark: false,
        }
    }

    /// A new container of `items`.
    fn of(items: impl IntoIterator<Item = Extent>) -> Self {
        let empty = Self {
            depth: 1,
            ..Self::leaf(0)
        };
        items.into_iter().fold(empty, Self::holding)
    }
}

/// Why the pass refuses `pickle`, or `Ok` when the VM may build it.
pub(crate) fn check(pickle: &[u8]) -> Result<(), String> {
    let mut copied = 0u64;
    let mut stack: Vec<Extent> = Vec::new();
    let mut memo: HashMap<u32, Extent> = HashMap::new();
    let mut at = 0usize;
    // Each `None` below is a place the pass cannot follow (where the VM fails too).
    let walked = (|| -> Option<Result<(), String>> {
        loop {
            let op = *pickle.get(at)?;
            at += 1;
            let mut take = |n: usize| -> Option<&[u8]> {
                let bytes = pickle.get(at..at.checked_add(n)?)?;
                at += n;
                Some(bytes)
            };
            // A mark popped as a value is a small object, as in the VM.
            let pop = |stack: &mut Vec<Extent>| stack.pop().map(|e| Extent { mark: false, ..e });
            let pop_to_mark = |stack: &mut Vec<Extent>| {
                let mark = stack.iter().rposition(|e| e.mark)?;
                let items: Vec<Extent> = stack.drain(mark + 1..).collect();
                stack.pop();
                Some(items)
            };
            let made = match op {
                b'.' => return Some(Ok(())),
                0x80 => {
                    take(1)?;
                    None
                }
                b'(' => Some(Extent::mark()),
                // GLOBAL: module and name, each a line (`mark` `mark` is the VM's mark).
                b'c' => {
                    let rest = pickle.get(at..)?;
                    let first = rest.iter().position(|&b| b == b'\n')?;
                    let second = rest[first + 1..].iter().position(|&b| b == b'\n')?;
                    let names = (&rest[..first], &rest[first + 1..first + 1 + second]);
                    at += first + second + 2;
                    Some(if names == (&b"mark"[..], &b"mark"[..]) {
                        Extent::mark()
                    } else {
                        Extent::leaf(first + second)
                    })
                }
                b'I' => {
                    let line = pickle.get(at..)?.iter().position(|&b| b == b'\n')?;
                    at += line + 1;
                    Some(Extent::leaf(0))
                }
                // BININT, BININT1, BININT2, BINFLOAT: a number of fixed width.
                b'J' | b'K' | b'M' | b'G' => {
                    take(match op {
                        b'J' => 4,
                        b'K' => 1,
                        b'M' => 2,
                        _ => 8,
                    })?;
                    Some(Extent::leaf(0))
                }
                b'X' => {
                    let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
                    take(len)?;
                    Some(Extent::leaf(len))
                }
                b'U' | 0x8a => {
                    let len = take(1)?[0] as usize;
                    take(len)?;
                    Some(Extent::leaf(len))
                }
                b'N' | 0x88 | 0x89 => Some(Extent::leaf(0)),
                b')' | b']' | b'}' => Some(Extent::of([])),
                b't' | b'l' => Some(Extent::of(pop_to_mark(&mut stack)?)),
                // DICT: the VM clones the keys and values it pairs.
                b'd' => {
                    let items = pop_to_mark(&mut stack)?;
                    let size = items.iter().fold(0u64, |n, e| n.saturating_add(e.size));
                    copied = copied.saturating_add(size);
                    Some(Extent::of(items))
                }
                0x85 => Some(Extent::of([pop(&mut stack)?])),
                0x86 => Some(Extent::of([pop(&mut stack)?, pop(&mut stack)?])),
                0x87 => Some(Extent::of([
                    pop(&mut stack)?,
                    pop(&mut stack)?,
                    pop(&mut stack)?,
                ])),
                // REDUCE, NEWOBJ: a callable or class and its arguments become one object. The
                // VM clones the arguments, and `_rebuild_from_type_v2` once more per level it
                // nests: charged as copies, by their depth.
                b'R' | 0x81 => {
                    let args = pop(&mut stack)?;
                    let callable = pop(&mut stack)?;
                    let clones = u64::from(args.depth) + 2;
                    copied = copied.saturating_add(args.size.saturating_mul(clones));
                    Some(Extent::of([callable, args]))
                }
                // BINPERSID: a persistent id becomes a tensor (or another object).
                b'Q' => Some(Extent::of([pop(&mut stack)?])),
                // APPEND: one object into the list below it.
                b'a' => {
                    let inner = pop(&mut stack)?;
                    let outer = pop(&mut stack)?;
                    Some(outer.holding(inner))
                }
                // BUILD: the object below and its state become a new object (into a dict, the
                // state's items go in; counted the deeper way).
                b'b' => {
                    let state = pop(&mut stack)?;
                    let object = pop(&mut stack)?;
                    Some(Extent::of([object, state]))
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
                // BINPUT, LONG_BINPUT, MEMOIZE: the memo stores a copy of the top (a mark
                // stays a mark).
                b'q' | b'r' | 0x94 => {
                    let index = match op {
                        b'q' => u32::from(take(1)?[0]),
                        b'r' => u32::from_le_bytes(take(4)?.try_into().ok()?),
                        _ => u32::try_from(memo.len()).ok()?,
                    };
                    let top = *stack.last()?;
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
                // An opcode the VM does not accept.
                _ => return None,
            };
            if copied > MAX_COPIED_BYTES {
                return Some(Err(format!(
                    "it copies more than {} MiB of objects by byte {at} (a pickle bomb: a \
                     module pickle copies a few small objects)",
                    MAX_COPIED_BYTES >> 20
                )));
            }
            if let Some(extent) = made {
                if extent.depth > MAX_DEPTH {
                    return Some(Err(format!(
                        "its objects nest more than {MAX_DEPTH} deep by byte {at} (a module \
                         pickle nests a few levels per submodule)"
                    )));
                }
                stack.push(extent);
            }
        }
    })();
    walked.unwrap_or_else(|| {
        Err(format!(
            "it cannot be followed to its end (byte {}: an opcode burn-store's reader does not \
             know, an argument past the end, or an object missing from the stack or memo)",
            at.saturating_sub(1)
        ))
    })
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
        assert!(err.contains("copies more than 256 MiB"), "{err}");
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
    fn what_cannot_be_followed_to_its_end_is_refused() {
        for ops in [
            &b"a"[..],            // an empty stack
            b"]e",                // no mark
            b"h\x07",             // no memo entry 7
            b"X\xff\xff\xff\xff", // a string past the end
            b"\xff",              // an opcode the VM does not know
        ] {
            let err = check(&pickle(ops)).expect_err(&format!("{ops:?} passed"));
            assert!(
                err.contains("cannot be followed to its end"),
                "{ops:?}: {err}"
            );
        }
        assert!(check(&[0x80, 2, b']']).is_err(), "no STOP");
    }

    /// The VM's marks are objects: popped as values, made by GLOBAL or fetched from the memo,
    /// they must not end the pass before a deep list does.
    #[test]
    fn marks_as_the_vm_has_them_do_not_hide_what_follows() {
        let deep = |prefix: &[u8]| {
            let mut ops = prefix.to_vec();
            ops.extend(std::iter::repeat_n(b']', 1000));
            ops.extend(std::iter::repeat_n(b'a', 999));
            pickle(&ops)
        };
        for prefix in [
            &b"(\x85"[..],      // a mark in a tuple
            b"]((a",            // a mark appended to a list
            b"cmark\nmark\nNl", // a mark made by GLOBAL, popped to
            b"(q\x00h\x00Nlt",  // a mark fetched from the memo, popped to
        ] {
            let err = check(&deep(prefix)).unwrap_err();
            assert!(err.contains("nest more than"), "{prefix:?}: {err}");
        }
        // Popped to, GLOBAL's mark and the memo's are marks, as in the VM.
        assert_eq!(check(&pickle(b"cmark\nmark\nNNl")), Ok(()));
        assert_eq!(check(&pickle(b"(q\x00h\x00NNlt")), Ok(()));
    }

    /// A REDUCE of nested `_rebuild_from_type_v2` calls: the VM clones the arguments once per
    /// level, all alive at once (a 4 MiB pickle of this kind allocated about 120 GB).
    #[test]
    fn reduce_arguments_cloned_per_level_count_as_copies() {
        let chain = |levels: usize, nones: usize| {
            let mut ops = b"ctorch._tensor\n_rebuild_from_type_v2\nq\x00".to_vec();
            ops.extend(b"h\x00".repeat(levels));
            ops.extend_from_slice(b"ctorch._utils\n_rebuild_parameter\n(");
            ops.extend(std::iter::repeat_n(b'N', nones));
            ops.extend_from_slice(b"l\x85\x86");
            ops.extend(std::iter::repeat_n(0x86u8, levels));
            ops.push(b'R');
            pickle(&ops)
        };
        let err = check(&chain(500, 100_000)).unwrap_err();
        assert!(err.contains("copies more than 256 MiB"), "{err}");
        // A tensor's rebuild: a few small arguments.
        assert_eq!(check(&chain(2, 6)), Ok(()));
    }

    /// BUILD makes a new object of the one below and its state: one level deeper than both.
    #[test]
    fn build_nests_one_level_a_time() {
        let mut ops = vec![b'N'];
        for _ in 0..MAX_DEPTH {
            ops.extend_from_slice(b"Nb");
        }
        assert!(check(&pickle(&ops)).is_ok());
        ops.extend_from_slice(b"Nb");
        let err = check(&pickle(&ops)).unwrap_err();
        assert!(err.contains("nest more than"), "{err}");
    }
}
