//! Giving a thread's unused stack pages back to the kernel.
//!
//! A thread keeps every stack page it ever touched. A shim's workers run a
//! container's create and start (OCI spec parsing, libcontainer, loading a
//! module), about 50 KiB deep, then idle for the pod's life; its main
//! thread keeps what `start` touched before the fork. [`trim`] drops the
//! pages well below the caller's frame, where nothing live can be.
use std::cell::Cell;

/// Pages this far below the caller's frame stay: the calls it makes
/// itself, and a signal handler's frame, use them.
const KEEP_BELOW: usize = 16 << 10;

thread_local! {
    /// This thread's stack: its lowest address and the one past its top;
    /// zeros until known (or where the C library cannot tell).
    static BOUNDS: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// Drops the pages of the calling thread's stack that lie more than
/// [`KEEP_BELOW`] below this call's frame, when the thread has used any
/// of them since they were last dropped; returns whether it asked the
/// kernel to.
///
/// It checks the one page just below that line first (a frame that goes
/// deeper touches it, since stack frames are probed page by page), so
/// calling it when a thread goes idle costs one `mincore` while the stack
/// stays shallow.
#[inline(never)]
pub fn trim() -> bool {
    let marker = 0u8;
    let here = std::hint::black_box(&marker) as *const u8 as usize;
    let page = rustix::param::page_size();
    let line = here.saturating_sub(KEEP_BELOW) & !(page - 1);
    let (low, high) = BOUNDS.with(|b| {
        if b.get() == (0, 0) {
            b.set(stack_bounds());
        }
        b.get()
    });
    // Called on another stack (a fiber's), this thread's is not below.
    if here >= high || line <= low {
        return false;
    }
    let mut resident = 0u8;
    // SAFETY: mincore reads the page tables of [line - page, line), a
    // page of this thread's stack, and writes one byte (one page) to
    // `resident`.
    if unsafe { libc::mincore((line - page) as *mut libc::c_void, page, &mut resident) } != 0 || resident & 1 == 0 {
        return false;
    }
    // SAFETY: [low, line) is this thread's own stack, below this call's
    // frame and below what the calls made from here use: only frames that
    // have returned were there, and nothing refers to them. The kernel
    // drops the pages; a frame that reaches them later finds them zeroed,
    // as a fresh stack.
    // (The main thread's stack may not yet reach down to `low`: the part
    // not mapped is skipped, and the call says ENOMEM.)
    unsafe { libc::madvise(low as *mut libc::c_void, line - low, libc::MADV_DONTNEED) };
    true
}

/// The calling thread's stack: its lowest address (above its guard page)
/// and the one past its top, or zeros when the C library cannot tell.
fn stack_bounds() -> (usize, usize) {
    // SAFETY: pthread_attr_t is plain data, filled in by
    // pthread_getattr_np before it is read and destroyed after; the stack's
    // address and size are written to the two locals.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return (0, 0);
        }
        let (mut addr, mut size) = (std::ptr::null_mut(), 0);
        let got = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if got == 0 {
            (addr as usize, addr as usize + size)
        } else {
            (0, 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Touches `depth` bytes of this thread's stack below the caller.
    #[inline(never)]
    fn go_deep(depth: usize) -> u8 {
        let mut buf = [0u8; 4096];
        std::hint::black_box(&mut buf)[0] = 1;
        if depth > buf.len() {
            go_deep(depth - buf.len()) & std::hint::black_box(&buf)[0]
        } else {
            buf[0]
        }
    }

    /// Resident pages of this thread's stack below `line`, by mincore.
    fn resident_below(line: usize) -> usize {
        let page = rustix::param::page_size();
        let low = BOUNDS.with(|b| b.get().0);
        let mut vec = vec![0u8; (line - low) / page];
        // SAFETY: [low, line) is this thread's stack; vec has a byte for
        // each of its pages.
        assert_eq!(unsafe { libc::mincore(low as *mut libc::c_void, line - low, vec.as_mut_ptr()) }, 0);
        vec.iter().filter(|&&b| b & 1 == 1).count()
    }

    #[test]
    fn called_on_another_stack_it_drops_nothing() {
        std::thread::spawn(|| {
            // As on a fiber's stack: the thread's own lies elsewhere, here
            // below this frame.
            let marker = 0u8;
            let here = std::hint::black_box(&marker) as *const u8 as usize;
            BOUNDS.with(|b| b.set((here - (8 << 20), here - (4 << 20))));
            assert!(!trim());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_gives_back_the_stack_its_deep_calls_left() {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                std::hint::black_box(go_deep(512 << 10));
                assert!(trim(), "the pages of a 512 KiB descent were not dropped");
                let marker = 0u8;
                let line = std::hint::black_box(&marker) as *const u8 as usize - (64 << 10);
                assert_eq!(resident_below(line), 0, "pages of the descent are still resident");
                // Nothing deeper since: the check page is gone, no madvise.
                assert!(!trim());
                // Deep again: dropped again, and the thread goes on as
                // before (the frames it makes find zeroed pages).
                assert_eq!(go_deep(256 << 10), 1);
                assert!(trim());
                assert_eq!(resident_below(line), 0);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
