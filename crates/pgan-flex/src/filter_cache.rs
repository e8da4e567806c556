//! Winograd-transformed filters kept per weight tensor, so a CPU training step transforms each
//! 3x3 kernel once instead of on every convolution that uses it.
//!
//! One D step runs each of D's convolutions about eight times with the same weights (the D
//! loss, the penalty's input gradient, its JVP primal and tangent, and their backward passes);
//! without the cache, each of them transformed the filters into a fresh 16·C_out·C_in buffer.
//!
//! An entry is keyed by the identity of the weight's storage, a `Weak` reference to burn-flex's
//! shared buffer (`Arc<Bytes>`), plus the view into it, the shape and the scale. Holding the
//! `Weak` keeps that allocation's address from being reused, and burn-flex only ever mutates a
//! buffer through `Arc::make_mut` / `Arc::get_mut`: with a `Weak` outstanding, the first moves
//! the bytes to a new allocation and the second refuses, so the data behind a live key never
//! changes. An optimizer step that updates the weights therefore leaves the old entry dead
//! (its `Weak` no longer upgrades); dead entries are dropped on the next lookup.

use std::sync::{Arc, Mutex, Weak};

use burn::backend::flex::FlexTensor;
use burn::tensor::Bytes;

use crate::shape::ConvShape;
use crate::winograd;

/// Live entries kept at most: every 3x3 layer of G and D at the largest configuration, with
/// room to spare; the least recently used goes first.
const MAX_ENTRIES: usize = 96;

struct Entry {
    storage: Weak<Bytes>,
    /// The weight slice's address and length inside the storage, then `c_out`, `c_in` and
    /// the scale's bits.
    key: (usize, usize, usize, usize, u32),
    filters: Arc<Vec<f32>>,
    last_use: u64,
}

#[derive(Default)]
struct Cache {
    entries: Vec<Entry>,
    clock: u64,
}

#[cfg(test)]
thread_local! {
    /// Lookups on this thread that found their filters (tests read it).
    static HITS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

static CACHE: Mutex<Cache> = Mutex::new(Cache {
    entries: Vec::new(),
    clock: 0,
});

/// `winograd::transform_filters(s, weight, scale)` of the contiguous `f32` tensor `weight`,
/// from the cache when this exact buffer was transformed before.
pub(crate) fn transformed(s: &ConvShape, weight: &FlexTensor, scale: f32) -> Arc<Vec<f32>> {
    let values = weight
        .as_slice::<f32>()
        .expect("filter_cache: the weight is a contiguous f32 tensor");
    let storage = weight.data_arc();
    let key = (
        values.as_ptr() as usize,
        values.len(),
        s.c_out,
        s.c_in,
        scale.to_bits(),
    );
    {
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        cache.clock += 1;
        let now = cache.clock;
        cache.entries.retain(|e| e.storage.strong_count() > 0);
        let found = cache
            .entries
            .iter_mut()
            .find(|e| e.key == key && std::ptr::eq(e.storage.as_ptr(), Arc::as_ptr(&storage)))
            .map(|e| {
                e.last_use = now;
                e.filters.clone()
            });
        if let Some(filters) = found {
            #[cfg(test)]
            HITS.with(|h| h.set(h.get() + 1));
            return filters;
        }
    }
    // Transform outside the lock: other threads (parallel tests) may use the cache meanwhile.
    let filters = Arc::new(winograd::transform_filters(s, values, scale));
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if cache.entries.len() >= MAX_ENTRIES {
        let oldest = (0..cache.entries.len())
            .min_by_key(|&i| cache.entries[i].last_use)
            .expect("the cache is full");
        cache.entries.swap_remove(oldest);
    }
    let last_use = cache.clock;
    cache.entries.push(Entry {
        storage: Arc::downgrade(&storage),
        key,
        filters: filters.clone(),
        last_use,
    });
    filters
}

/// Lookups answered from the cache so far on this thread.
#[cfg(test)]
pub(crate) fn hits() -> u64 {
    HITS.with(|h| h.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Distribution, Tensor};

    fn shape(c: usize) -> ConvShape {
        ConvShape {
            n: 1,
            c_in: c,
            c_out: c,
            h: 4,
            w: 4,
            k: 3,
        }
    }

    fn primitive(t: Tensor<Flex, 4>) -> FlexTensor {
        t.into_primitive().tensor()
    }

    #[test]
    fn equals_a_fresh_transform_and_follows_in_place_updates() {
        let s = shape(5);
        let w = Tensor::<Flex, 4>::random(
            [5, 5, 3, 3],
            Distribution::Normal(0.0, 1.0),
            &Default::default(),
        );
        let fresh = |t: &FlexTensor, scale| {
            winograd::transform_filters(&s, t.as_slice::<f32>().unwrap(), scale)
        };
        let mut p = primitive(w);
        let first = transformed(&s, &p, 0.5);
        assert_eq!(*first, fresh(&p, 0.5));
        // Same buffer, same scale: the same filters, no new transform.
        let again = transformed(&s, &p, 0.5);
        assert!(
            Arc::ptr_eq(&first, &again),
            "second lookup reuses the entry"
        );
        // Another scale is another entry.
        assert_eq!(*transformed(&s, &p, 2.0), fresh(&p, 2.0));
        // An in-place update (what an optimizer does to a uniquely held weight) must not see
        // the old filters.
        p.storage_mut::<f32>()[0] += 1.0;
        let updated = transformed(&s, &p, 0.5);
        assert_eq!(*updated, fresh(&p, 0.5));
        assert_ne!(*updated, *first);
    }

    #[test]
    fn a_dropped_weight_never_answers_for_a_new_one() {
        let s = shape(3);
        let dev = Default::default();
        for seed in 0..20 {
            // Fresh tensors of the same size often land at a freed one's address.
            let w = Tensor::<Flex, 4>::random([3, 3, 3, 3], Distribution::Normal(0.0, 1.0), &dev)
                .add_scalar(seed as f32);
            let p = primitive(w);
            let got = transformed(&s, &p, 1.0);
            let want = winograd::transform_filters(&s, p.as_slice::<f32>().unwrap(), 1.0);
            assert_eq!(*got, want, "seed {seed}");
        }
    }
}
