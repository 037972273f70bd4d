//! The binary's allocator: the first allocations come from one fixed arena, handed out by moving
//! a pointer; the rest, and everything once the arena is used up, from the system's allocator.
//!
//! A command lives for a millisecond and allocates a few hundred small blocks (clap's tree of
//! commands and options is most of them, and is never freed: see `cli::parse`). musl's allocator
//! spreads such blocks over a page per size class and takes a lock and a search for each: with
//! it, allocating was two fifths of the instructions of a fresh login's `refresh`, and its first
//! touches of new pages a third of the page faults. From the arena a block costs an addition, and
//! blocks lie side by side on as few pages as their bytes need.
//!
//! A block freed inside the arena is not reused, except the last one handed out (so a growing
//! vector at the top grows in place); the arena is small, so what a long-running daemon leaves
//! there is bounded by its size. Blocks from the system go back to it as usual.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Enough for what a command allocates before its work is done (`refresh`, `status`, `token`
/// and `exec` allocate 300 to 400 KiB in all, part of it freed and allocated again, most of it
/// clap's tree of commands). Pages of it never touched cost nothing.
const SIZE: usize = 512 << 10;

/// The alignment of the arena's start (the `align` of [`Space`]).
const ALIGN: usize = 4096;

#[repr(C, align(4096))]
struct Space(UnsafeCell<[u8; SIZE]>);

pub struct Arena {
    space: Space,
    /// Bytes handed out from the start of `space`.
    used: AtomicUsize,
}

// SAFETY: the bytes are only reached through blocks handed out once each (`used` moves by compare
// and swap), as every allocator's are.
unsafe impl Sync for Arena {}

impl Arena {
    // No `Default`: it would build the arena's bytes as a value rather than in place.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Arena {
        Arena {
            space: Space(UnsafeCell::new([0; SIZE])),
            used: AtomicUsize::new(0),
        }
    }

    fn base(&self) -> *mut u8 {
        self.space.0.get().cast()
    }

    /// The offset of `ptr` in the arena, when it is one of its blocks.
    fn offset(&self, ptr: *mut u8) -> Option<usize> {
        let at = (ptr as usize).wrapping_sub(self.base() as usize);
        (at < SIZE).then_some(at)
    }

    /// A block of `layout` from the arena, or None when it has no room left for it.
    fn take(&self, layout: Layout) -> Option<*mut u8> {
        // The arena's start is aligned to a page: a stricter alignment is the system's to give.
        if layout.align() > ALIGN {
            return None;
        }
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            // The alignment is a power of two: rounding up is a mask, not a division.
            let start = used.checked_add(layout.align() - 1)? & !(layout.align() - 1);
            let end = start
                .checked_add(layout.size())
                .filter(|end| *end <= SIZE)?;
            match self
                .used
                .compare_exchange_weak(used, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                // SAFETY: `start` is within the arena (`end` is at most its size).
                Ok(_) => return Some(unsafe { self.base().add(start) }),
                Err(now) => used = now,
            }
        }
    }
}

// SAFETY: blocks from the arena do not overlap (see `take`) and are aligned as asked; blocks
// from the system are handled by the system's allocator only.
// Not inlined: at every allocation site of the program, that would add more than half a megabyte
// of code.
unsafe impl GlobalAlloc for Arena {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.take(layout) {
            Some(ptr) => ptr,
            // SAFETY: the caller's promises about `layout` hold for the system's allocator too.
            None => unsafe { System.alloc(layout) },
        }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match self.offset(ptr) {
            // The last block handed out is given back; any other stays where it is.
            Some(at) => {
                let _ = self.used.compare_exchange(
                    at + layout.size(),
                    at,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            // SAFETY: not the arena's, so the system's, with this layout.
            None => unsafe { System.dealloc(ptr, layout) },
        }
    }

    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(at) = self.offset(ptr) else {
            // SAFETY: the system's block, resized by the system.
            return unsafe { System.realloc(ptr, layout, new_size) };
        };
        // A block shrinks where it is (the bytes after it are simply not handed out again); the
        // last block handed out also grows in place when there is room.
        if new_size <= layout.size() {
            return ptr;
        }
        if at + new_size <= SIZE
            && self
                .used
                .compare_exchange(
                    at + layout.size(),
                    at + new_size,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return ptr;
        }
        // SAFETY: `new_size` with the block's alignment is a valid layout (the caller's promise).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as for `alloc`.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the shorter length, and distinct.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::{Arena, SIZE};
    use std::alloc::{GlobalAlloc, Layout};

    /// An arena made in place on the heap (built as a value, it would not fit a test's stack).
    fn fresh() -> Box<Arena> {
        // SAFETY: all zeros is a new arena: no byte handed out, `used` at 0.
        unsafe { Box::<Arena>::new_zeroed().assume_init() }
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn blocks_are_aligned_apart_and_the_last_one_is_given_back() {
        let arena = fresh();
        unsafe {
            let a = arena.alloc(layout(3, 1));
            let b = arena.alloc(layout(16, 16));
            assert_eq!(arena.offset(a), Some(0));
            assert_eq!(arena.offset(b), Some(16), "aligned past a's 3 bytes");
            b.write_bytes(0xaa, 16);
            a.write_bytes(0x55, 3);
            assert_eq!(*b, 0xaa);
            // b is the last block: freed, its place is handed out again.
            arena.dealloc(b, layout(16, 16));
            let c = arena.alloc(layout(8, 8));
            assert_eq!(c, b);
            // a is not the last block: freed, its place stays taken.
            arena.dealloc(a, layout(3, 1));
            assert_eq!(arena.offset(arena.alloc(layout(1, 1))), Some(24));
        }
    }

    #[test]
    fn the_last_block_grows_in_place_and_any_block_shrinks_in_place() {
        let arena = fresh();
        unsafe {
            let a = arena.alloc(layout(8, 8));
            a.write_bytes(7, 8);
            let grown = arena.realloc(a, layout(8, 8), 64);
            assert_eq!(grown, a, "the last block grows where it is");
            let b = arena.alloc(layout(8, 8));
            assert_eq!(arena.offset(b), Some(64));
            assert_eq!(arena.realloc(a, layout(64, 8), 16), a, "shrunk in place");
            // a is no longer the last block: growing it moves it, keeping its bytes.
            let moved = arena.realloc(a, layout(16, 8), 128);
            assert_ne!(moved, a);
            assert_eq!(std::slice::from_raw_parts(moved, 8), &[7; 8]);
            arena.dealloc(moved, layout(128, 8));
        }
    }

    #[test]
    fn what_does_not_fit_comes_from_the_system_and_goes_back_to_it() {
        let arena = fresh();
        unsafe {
            let big = arena.alloc(layout(SIZE + 1, 8));
            assert!(!big.is_null());
            assert_eq!(arena.offset(big), None);
            let page_aligned_beyond = arena.alloc(layout(64, 8192));
            assert_eq!(arena.offset(page_aligned_beyond), None);
            assert_eq!(page_aligned_beyond as usize % 8192, 0);
            let most = arena.alloc(layout(SIZE - 8, 1));
            assert_eq!(arena.offset(most), Some(0));
            let rest = arena.alloc(layout(16, 1));
            assert_eq!(arena.offset(rest), None, "the arena is full");
            // A block of the arena that must grow beyond it moves to the system's.
            let moved = arena.realloc(most, layout(SIZE - 8, 1), SIZE * 2);
            assert_eq!(arena.offset(moved), None);
            for (ptr, l) in [
                (big, layout(SIZE + 1, 8)),
                (page_aligned_beyond, layout(64, 8192)),
                (rest, layout(16, 1)),
                (moved, layout(SIZE * 2, 1)),
            ] {
                arena.dealloc(ptr, l);
            }
        }
    }

    #[test]
    fn threads_never_get_the_same_block() {
        let arena: &'static Arena = Box::leak(fresh());
        let handed: Vec<Vec<usize>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..1000)
                            .map(|_| unsafe { arena.alloc(layout(24, 8)) } as usize)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let mut all: Vec<usize> = handed.into_iter().flatten().collect();
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count, "a block handed out twice");
    }
}
