//! A one-shot callback `FnOnce(&mut A, &mut B, C)` in two words, with no allocation when the
//! closure fits in one word (it captures nothing, or one reference-counted pointer, index or
//! integer). A larger closure is boxed once and its thin pointer takes the word.
//!
//! `Box<dyn FnOnce>` would cost a fat pointer plus an allocation for every closure that captures
//! anything, which for a million timers is 48 bytes each; this costs 16. The type can also hold
//! a plain `u64` instead of a callback, so that a table entry needs no enum tag to hold either.

use std::marker::PhantomData;
use std::mem::{self, ManuallyDrop, MaybeUninit};

/// Calls (`Some(args)`) or drops (`None`) the closure stored in the word it is given; either way
/// the closure is moved out of the word, which holds nothing afterwards.
type Shim<A, B, C> = for<'a, 'b> unsafe fn(*mut u64, Option<(&'a mut A, &'b mut B, C)>);

/// A `FnOnce(&mut A, &mut B, C)`, or a plain `u64` (see [`SmallFnOnce::word`]).
pub(crate) struct SmallFnOnce<A, B, C> {
    /// `None`: `data` is a plain, initialised `u64`. `Some`: `data` holds the closure, or its
    /// box, that this shim was made for.
    shim: Option<Shim<A, B, C>>,
    data: MaybeUninit<u64>,
    /// The closure may be neither `Send` nor `Sync`, and its type is gone: stay neither.
    _closure: PhantomData<*mut ()>,
}

/// Whether a closure of type `F` is stored in the word itself.
const fn fits<F>() -> bool {
    mem::size_of::<F>() <= mem::size_of::<u64>() && mem::align_of::<F>() <= mem::align_of::<u64>()
}

impl<A, B, C> SmallFnOnce<A, B, C> {
    /// Stores `f`: in the word if it fits, else boxed.
    pub(crate) fn new<F>(f: F) -> Self
    where
        F: FnOnce(&mut A, &mut B, C) + 'static,
    {
        let mut data = MaybeUninit::<u64>::uninit();
        let shim: Shim<A, B, C> = if fits::<F>() {
            // SAFETY: `F` fits in the word's size and alignment (checked just above), and the
            // word is ours to write.
            unsafe { data.as_mut_ptr().cast::<F>().write(f) };
            call_inline::<A, B, C, F>
        } else {
            let boxed = Box::into_raw(Box::new(f));
            // SAFETY: a thin pointer fits in a `u64` on every Linux target, aligned.
            unsafe { data.as_mut_ptr().cast::<*mut F>().write(boxed) };
            call_boxed::<A, B, C, F>
        };
        SmallFnOnce {
            shim: Some(shim),
            data,
            _closure: PhantomData,
        }
    }

    /// A plain value in place of a callback: calling it does nothing.
    pub(crate) fn word(value: u64) -> Self {
        SmallFnOnce {
            shim: None,
            data: MaybeUninit::new(value),
            _closure: PhantomData,
        }
    }

    /// The plain value, if this holds one rather than a callback.
    pub(crate) fn as_word(&self) -> Option<u64> {
        match self.shim {
            // SAFETY: without a shim, `data` was initialised by `word`.
            None => Some(unsafe { self.data.assume_init() }),
            Some(_) => None,
        }
    }

    /// Calls the callback (consuming it); returns `false`, calling nothing, for a plain value.
    pub(crate) fn call(self, a: &mut A, b: &mut B, c: C) -> bool {
        // The shim moves the closure out of the word: `self` must not drop it again, even when
        // the call unwinds.
        let mut this = ManuallyDrop::new(self);
        match this.shim {
            // SAFETY: `data` holds what `shim` was made for (see `new`), and `this` is never
            // used or dropped after the shim moved it out.
            Some(shim) => unsafe { shim(this.data.as_mut_ptr(), Some((a, b, c))) },
            None => return false,
        }
        true
    }
}

impl<A, B, C> Drop for SmallFnOnce<A, B, C> {
    fn drop(&mut self) {
        if let Some(shim) = self.shim {
            // SAFETY: `data` holds what `shim` was made for; `drop` runs once, and `call`, the
            // only other user of the shim, keeps `drop` from running.
            unsafe { shim(self.data.as_mut_ptr(), None) }
        }
    }
}

/// # Safety
/// `data` holds a valid `F`, written by `SmallFnOnce::new`, which this moves out.
unsafe fn call_inline<A, B, C, F>(data: *mut u64, args: Option<(&mut A, &mut B, C)>)
where
    F: FnOnce(&mut A, &mut B, C),
{
    // SAFETY: per the contract, `data` holds an `F`, aligned; reading moves it out.
    let f = unsafe { data.cast::<F>().read() };
    if let Some((a, b, c)) = args {
        f(a, b, c);
    }
}

/// # Safety
/// `data` holds a pointer from `Box::<F>::into_raw`, written by `SmallFnOnce::new`, which this
/// takes back.
unsafe fn call_boxed<A, B, C, F>(data: *mut u64, args: Option<(&mut A, &mut B, C)>)
where
    F: FnOnce(&mut A, &mut B, C),
{
    // SAFETY: per the contract, the word holds the pointer of a live box of `F`, owned by us.
    let f = unsafe { Box::from_raw(data.cast::<*mut F>().read()) };
    if let Some((a, b, c)) = args {
        f(a, b, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    type Cb = SmallFnOnce<Vec<u32>, u32, u32>;

    #[test]
    fn small_and_large_closures_run_once_with_their_captures() {
        let mut log = Vec::new();
        let mut n = 0;
        let small: Cb = SmallFnOnce::new(|log: &mut Vec<u32>, n: &mut u32, c| {
            log.push(c);
            *n += 1;
        });
        let captured = [7u32; 9];
        let large: Cb = SmallFnOnce::new(move |log: &mut Vec<u32>, _: &mut u32, c| {
            log.extend_from_slice(&captured);
            log.push(c);
        });
        assert!(small.call(&mut log, &mut n, 1));
        assert!(large.call(&mut log, &mut n, 2));
        assert_eq!(n, 1);
        assert_eq!(log.len(), 11);
        assert_eq!(log[0], 1);
        assert_eq!(log[10], 2);
    }

    #[test]
    fn captures_are_dropped_exactly_once_whether_called_or_not() {
        let token = Rc::new(Cell::new(0));
        for size in [1usize, 4] {
            let t = token.clone();
            let pad = vec![0u8; size];
            let called: Cb = if size == 1 {
                SmallFnOnce::new(move |_: &mut Vec<u32>, _: &mut u32, _| t.set(t.get() + 1))
            } else {
                let big = (t, [pad.len(); 4]);
                SmallFnOnce::new(move |_: &mut Vec<u32>, _: &mut u32, _| big.0.set(big.0.get() + 1))
            };
            called.call(&mut Vec::new(), &mut 0, 0);
            let t = token.clone();
            let dropped: Cb = SmallFnOnce::new(move |_: &mut Vec<u32>, _: &mut u32, _| drop(t));
            drop(dropped);
        }
        assert_eq!(token.get(), 2);
        assert_eq!(Rc::strong_count(&token), 1, "every capture dropped");
    }

    #[test]
    fn a_plain_word_is_kept_and_never_called() {
        let w: Cb = SmallFnOnce::word(u64::MAX - 3);
        assert_eq!(w.as_word(), Some(u64::MAX - 3));
        assert!(!w.call(&mut Vec::new(), &mut 0, 0));
        let f: Cb = SmallFnOnce::new(|_: &mut Vec<u32>, _: &mut u32, _| {});
        assert_eq!(f.as_word(), None);
        assert_eq!(mem::size_of::<Cb>(), 16);
    }

    #[test]
    fn a_panicking_callback_drops_its_captures_once() {
        let token = Rc::new(());
        let t = token.clone();
        let f: Cb = SmallFnOnce::new(move |_: &mut Vec<u32>, _: &mut u32, _| {
            let _keep = &t;
            panic!("boom");
        });
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            f.call(&mut Vec::new(), &mut 0, 0);
        }));
        assert!(r.is_err());
        assert_eq!(Rc::strong_count(&token), 1);
    }

    #[test]
    fn closures_of_every_shape_run_once_and_drop_once() {
        #[repr(align(16))]
        struct Wide(u32);
        #[repr(align(16))]
        struct WideZst;
        static STATIC: u32 = 11;
        let token = Rc::new(());
        let mut log = Vec::new();
        let (t1, t3, six) = (token.clone(), token.clone(), Rc::new(6));
        let (wide, wide_zst, padded, r) = (Wide(1), WideZst, (2u8, 3u32), &STATIC);
        let callbacks: [Cb; 7] = [
            SmallFnOnce::new(|log: &mut Vec<u32>, _: &mut u32, c| log.push(c)),
            SmallFnOnce::new(move |log: &mut Vec<u32>, _: &mut u32, _| log.push(wide.0)),
            SmallFnOnce::new(move |log: &mut Vec<u32>, _: &mut u32, _| {
                let _keep = (&wide_zst, &t1);
                log.push(2);
            }),
            SmallFnOnce::new(move |log: &mut Vec<u32>, _: &mut u32, _| {
                log.push(u32::from(padded.0) + padded.1)
            }),
            SmallFnOnce::new(move |log: &mut Vec<u32>, _: &mut u32, _| log.push(*r)),
            SmallFnOnce::new(move |log: &mut Vec<u32>, _: &mut u32, _| log.push(*six)),
            SmallFnOnce::new(move |_: &mut Vec<u32>, _: &mut u32, _| drop(t3)),
        ];
        // Moved around, as table entries are when the table grows.
        let moved: Vec<Cb> = callbacks.into_iter().collect();
        for f in moved {
            f.call(&mut log, &mut 0, 0);
        }
        assert_eq!(log, [0, 1, 2, 5, 11, 6]);
        assert_eq!(Rc::strong_count(&token), 1);
    }

    #[test]
    fn a_panicking_drop_of_the_captures_runs_once_called_or_not() {
        struct PanicOnDrop(Rc<Cell<u32>>);
        impl Drop for PanicOnDrop {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
                panic!("drop");
            }
        }
        let drops = Rc::new(Cell::new(0));
        for call in [false, true] {
            let p = PanicOnDrop(drops.clone());
            let f: Cb = SmallFnOnce::new(move |_: &mut Vec<u32>, _: &mut u32, _| {
                let _keep = &p;
            });
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if call {
                    f.call(&mut Vec::new(), &mut 0, 0);
                } else {
                    drop(f);
                }
            }));
            assert!(r.is_err());
        }
        assert_eq!(drops.get(), 2);
        assert_eq!(Rc::strong_count(&drops), 1);
    }
}
