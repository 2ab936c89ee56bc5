//! How the writer appends to the active segment: by copying into a writable shared
//! mapping of the file, so an append costs no system call, or — when every group is
//! synced right after it is written — by `pwrite` into blocks reserved ahead.
//!
//! The writer maps the active segment read-write (`MAP_SHARED`, `segment_bytes` long)
//! and reserves the file's blocks with `fallocate` (mode 0) in [`PREALLOC_CHUNK`]s
//! ahead of the written length. A store through the mapping then lands in the page
//! cache, the same pages the read-only window of [`crate::segment::Segment`] and every
//! `pread` see; `fdatasync` writes them back like `pwrite`-n pages (on Linux `msync`
//! with `MS_SYNC` is the same `vfs_fsync_range` an `fsync` does: dirty pages of shared
//! file mappings are in the page cache's dirty set, see `mm/msync.c`).
//!
//! Which of the two ([`AppendMode`]) follows the sync policy. Writing back a page that
//! is mapped writable makes the kernel write-protect it again (`folio_mkclean`: a TLB
//! shoot-down, an interrupt to every other CPU running one of the process's threads),
//! and the next store into it faults. Under `SyncPolicy::Always` that happens at every
//! group, since every group is followed by an `fdatasync`; one `pwrite` per group
//! costs less there (docs/benchmarks.md, "Appends by `pwrite` under `always`"). Under
//! the other policies a page is written back seldom and the mapping's system-call-free
//! appends win. Both modes reserve blocks ahead, so an append never grows the file and
//! an `fdatasync` never has to write the file's size.
//!
//! Why `fallocate` and not `set_len`: a store into a mapped page past the end of the
//! file is a `SIGBUS`, and a store into a hole of a sparse file that finds the disk
//! full is one too (at the page fault). Reserving the blocks first turns a full disk
//! into a clean error of the batch that needed the room, before any byte of it is
//! copied. Where `fallocate` is not supported, or the mapping cannot be made, the
//! segment is appended to with `pwrite` as before.
//!
//! Under `Written` (every group is followed by an `fdatasync`), the reserved blocks are
//! also written with zeros as soon as they are reserved. `fallocate` leaves them
//! *unwritten* extents: the first write into one converts it, and that conversion is
//! metadata the next `fdatasync` must write as well (the inode's extent tree on ext4;
//! a journal commit on a journaled ext4 or XFS). Zeroed, the chunk's conversion is
//! written by the one `fdatasync` after the group that reserved it, and the groups
//! after it, landing on written blocks, sync their data pages only: 28–41 % less
//! time per `fdatasync` on this machine's ext4 for a group that reaches into a new
//! block (docs/benchmarks.md, "Zeroed blocks under `always`"; a lone small put mostly
//! rewrites a block converted already and gains little), for one larger sync per
//! [`PREALLOC_CHUNK`] (~1 ms here). Databases zero their write-ahead logs ahead for the
//! same reason (PostgreSQL's WAL segments).
//!
//! The preallocated tail is zeros and never holds a record: sealing a segment
//! ([`Appender::seal`]) cuts the file back to its written length before the next
//! segment is created, and after a crash recovery cuts a zero tail of the newest log
//! segment quietly ([`is_preallocated_tail`]).

use std::fs::File;
use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use memmap2::{MmapOptions, MmapRaw};

/// Bytes reserved at a time ahead of the written length: 1 MiB, one `fallocate` per
/// ~8 000 records of 130 bytes. Small, because the reserved blocks count as used disk
/// space while the engine is open (a sealed or closed segment gives back what it did
/// not use).
pub(crate) const PREALLOC_CHUNK: u64 = 1024 * 1024;
/// Zeros for [`Appender::zero`], written a piece at a time.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// A preallocated file length is always a multiple of this. Recovery takes a zero tail
/// for preallocation only when the file length is one, so a torn write that happens to
/// end in zero bytes (say, the first bytes of a CRC) is still reported as torn.
pub(crate) const PREALLOC_ALIGN: u64 = 4096;

/// Whether `bytes` (a whole log segment file) ends in preallocated space from `from`
/// on: its length is a multiple of [`PREALLOC_ALIGN`] and every byte from `from` to the
/// end is zero. No record starts with zero bytes that decode (its version byte is
/// never 0), so such a tail holds no record, torn or whole.
pub(crate) fn is_preallocated_tail(bytes: &[u8], from: u64) -> bool {
    let Ok(from) = usize::try_from(from) else {
        return false;
    };
    from < bytes.len()
        && (bytes.len() as u64).is_multiple_of(PREALLOC_ALIGN)
        && bytes[from..].iter().all(|&b| b == 0)
}

/// An append that failed.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// No byte of the append reached the file, or those that did were cut off again:
    /// the file ends where it did before.
    Clean(io::Error),
    /// A positioned write failed part-way and cutting its bytes off failed too: the
    /// file may end in part of a record.
    Uncut { write: io::Error, cut: io::Error },
}

/// How appends reach the active segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AppendMode {
    /// Copied into a writable shared mapping: no system call per append.
    Mapped,
    /// One `pwrite` per append: for a file synced after every append, whose mapped
    /// pages would be write-protected and faulted in again each time.
    Written,
}

/// The writer's handle on how to append to one active segment file.
#[derive(Debug)]
pub(crate) struct Appender {
    /// The file mapped read-write, `segment_bytes` long (past the end of the file, as
    /// the read-only window is). `None`: appends use `pwrite`.
    map: Option<MmapRaw>,
    /// Blocks are reserved ahead of the written length, up to this length (rounded up
    /// to [`PREALLOC_ALIGN`]); 0: no reservation (every `pwrite` grows the file).
    reserve_cap: u64,
    /// The file is at least this long (blocks reserved by `fallocate`, or written):
    /// the mapping is written only below it, and every append ends at or below it.
    reserved: u64,
    /// The file may be up to this long (a `fallocate` that failed part-way may have
    /// grown it): [`Appender::seal`] cuts it back when this is above the written length.
    grown: u64,
    /// Reserved blocks are written with zeros at once ([`AppendMode::Written`]).
    zero_reserved: bool,
}

impl Appender {
    /// An appender for `file`, which is `len` bytes long, to be written up to
    /// `segment_bytes`. A mapped appender falls back to `pwrite` when the file cannot
    /// be mapped.
    pub fn new(file: &File, len: u64, segment_bytes: u64, mode: AppendMode) -> Appender {
        let map = match mode {
            AppendMode::Mapped => usize::try_from(segment_bytes)
                .ok()
                .and_then(|n| MmapOptions::new().len(n).map_raw(file).ok()),
            AppendMode::Written => None,
        };
        Appender {
            map,
            reserve_cap: segment_bytes,
            reserved: len,
            grown: len,
            zero_reserved: mode == AppendMode::Written,
        }
    }

    /// An appender that only uses `pwrite`, without reserving blocks (for tests of
    /// that path, which is also what a file system without `fallocate` gets).
    #[cfg(test)]
    pub fn positioned(len: u64) -> Appender {
        Appender {
            map: None,
            reserve_cap: 0,
            reserved: len,
            grown: len,
            zero_reserved: false,
        }
    }

    /// Whether appends go through the mapping.
    #[cfg(test)]
    pub fn is_mapped(&self) -> bool {
        self.map.is_some()
    }

    /// Appends `bytes` at `at`, the file's written length: blocks reserved first when
    /// it ends within the segment's length, then copied into the mapping if there is
    /// one, else one positioned write.
    pub fn append(&mut self, file: &File, at: u64, bytes: &[u8]) -> Result<(), AppendError> {
        let end = at + bytes.len() as u64;
        if end > self.reserved && end <= self.reserve_cap {
            match self.reserve(file, end) {
                Ok(()) => {}
                Err(e) if unsupported(&e) => {
                    // This file system cannot reserve blocks: appends to this
                    // segment go through `pwrite`, growing the file as they go.
                    tracing::debug!(error = %e, "fallocate unsupported; appending with pwrite");
                    self.map = None;
                    self.reserve_cap = 0;
                    return self.write_at(file, at, bytes);
                }
                Err(e) => return Err(AppendError::Clean(e)),
            }
        }
        // A mapping exists only while `reserve_cap` is its length, so an append that
        // ends inside it had its blocks reserved just above; checked all the same.
        if let Some(map) = &self.map
            && end <= map.len() as u64
            && end <= self.reserved
        {
            // SAFETY: `at..end` lies inside the mapping and below `self.reserved` (both
            // checked above), a length the file has (blocks reserved by `fallocate`, or
            // written); the file is only shortened by this appender (`seal`, a failed
            // write's cut-back, both of which lower `reserved` or drop the mapping
            // first) or by recovery before the writer exists, so no byte stored here
            // is past the end of the file. Only the writer (the holder of the
            // `WriterCell` lock, which owns this appender) writes through this
            // mapping, and only at or after the written length: readers read through
            // their own mapping, and only below the published length, which the
            // writer stores (Release) after this copy — so no byte copied here is read
            // while it changes. `bytes` is the writer's own buffer, not inside the
            // mapping.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    map.as_mut_ptr().add(at as usize),
                    bytes.len(),
                );
            }
            return Ok(());
        }
        self.write_at(file, at, bytes)
    }

    /// Reserves the file's blocks to at least `end`: a chunk ahead, ending on a
    /// multiple of [`PREALLOC_ALIGN`], never past the segment's length (the mapping's,
    /// rounded up to that alignment). When the chunk does not fit (a full disk, a
    /// file-size limit), only `end` itself is tried: a batch that `pwrite` could still
    /// have written is not refused for want of room for the ones after it.
    fn reserve(&mut self, file: &File, end: u64) -> io::Result<()> {
        let cap = self.reserve_cap.next_multiple_of(PREALLOC_ALIGN);
        let chunk_end = end
            .max(self.reserved + PREALLOC_CHUNK)
            .next_multiple_of(PREALLOC_ALIGN)
            .min(cap)
            .max(end);
        match self.reserve_to(file, chunk_end) {
            Err(e) if chunk_end > end && !unsupported(&e) => self.reserve_to(file, end),
            other => other,
        }
    }

    /// One `fallocate` from `reserved` to `target`. A failed one is cut back.
    fn reserve_to(&mut self, file: &File, target: u64) -> io::Result<()> {
        let (Ok(offset), Ok(len)) = (
            libc::off_t::try_from(self.reserved),
            libc::off_t::try_from(target - self.reserved),
        ) else {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        };
        self.grown = self.grown.max(target);
        if let Err(e) = fallocate(file, offset, len) {
            // A full disk can leave part of the range allocated and the file longer.
            // Nothing but zeros lies past `reserved` (every append ends below it), so
            // the file is cut back there (best effort; `seal` cuts it anyway).
            if file.set_len(self.reserved).is_ok() {
                self.grown = self.reserved;
            }
            return Err(e);
        }
        if self.zero_reserved {
            Self::zero(file, self.reserved, target);
        }
        self.reserved = target;
        Ok(())
    }

    /// Writes zeros over `from..to`, blocks just reserved (see the module doc): they
    /// held zeros already, so a write that fails changes nothing a reader or recovery
    /// sees; the blocks then stay unwritten extents and the syncs after it slower, as
    /// they were before this step existed.
    fn zero(file: &File, from: u64, to: u64) {
        let mut at = from;
        while at < to {
            let len = usize::try_from(to - at).map_or(ZEROS.len(), |n| n.min(ZEROS.len()));
            if let Err(e) = file.write_all_at(&ZEROS[..len], at) {
                tracing::debug!(error = %e, "cannot zero reserved blocks; appending to them as they are");
                return;
            }
            at += len as u64;
        }
    }

    /// One positioned write; a failed one is cut back off the file.
    fn write_at(&mut self, file: &File, at: u64, bytes: &[u8]) -> Result<(), AppendError> {
        let end = at + bytes.len() as u64;
        let Err(write) = file.write_all_at(bytes, at) else {
            // The file is now at least `end` long.
            self.reserved = self.reserved.max(end);
            self.grown = self.grown.max(end);
            return Ok(());
        };
        // Whatever part of the bytes reached the file is cut off, so no half-written
        // record stays behind and the next append starts at a clean end. The mapping is
        // never written past `reserved`, which the cut lowers first.
        self.reserved = self.reserved.min(at);
        match file.set_len(at) {
            Ok(()) => {
                self.grown = at;
                Err(AppendError::Clean(write))
            }
            Err(cut) => Err(AppendError::Uncut { write, cut }),
        }
    }

    /// Stops appending through the mapping and makes the file exactly `len` bytes long,
    /// durably: what sealing or closing a segment needs, so no preallocated zeros stay
    /// at the end of a file that is no longer the active one. The caller has synced
    /// the written bytes. Retried by a later call when it fails.
    pub fn seal(&mut self, file: &File, len: u64) -> io::Result<()> {
        // Unmapped before the file is shortened: no page past the new end stays mapped
        // writable. Later appends (if sealing fails and the segment stays active) use
        // `pwrite` and reserve nothing.
        self.map = None;
        self.reserve_cap = 0;
        self.reserved = self.reserved.min(len);
        if self.grown > len {
            file.set_len(len)?;
            file.sync_all()?;
            self.grown = len;
        }
        Ok(())
    }
}

/// Reserves the blocks of `len` bytes at `offset` and grows the file to cover them
/// (`fallocate` mode 0).
#[cfg(target_os = "linux")]
fn fallocate(file: &File, offset: libc::off_t, len: libc::off_t) -> io::Result<()> {
    // SAFETY: a plain system call on a descriptor that `file` keeps open for the call;
    // it reads and writes no memory of this process.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// No `fallocate` here: appends use `pwrite`.
#[cfg(not(target_os = "linux"))]
fn fallocate(_: &File, _: libc::off_t, _: libc::off_t) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
}

/// `fallocate` is not supported for this file (file system or kernel). `EINVAL` is
/// taken as unsupported too (some file systems answer it for mode 0): falling back to
/// `pwrite` is always safe.
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(len: u64) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("f"))
            .expect("create");
        file.set_len(len).expect("set_len");
        (dir, file)
    }

    /// Appends 1000 records of 100 bytes after a 32-byte header, calls `after_each`
    /// with the written length after each, checks that the last one reads back, and
    /// returns the written length.
    fn append_records(app: &mut Appender, file: &File, mut after_each: impl FnMut(u64)) -> u64 {
        let mut at = 32u64;
        for i in 0..1000u32 {
            let bytes = vec![(i % 251) as u8 + 1; 100];
            app.append(file, at, &bytes).expect("append");
            at += 100;
            after_each(at);
        }
        let mut back = vec![0u8; 100];
        file.read_exact_at(&mut back, 32 + 999 * 100).expect("read");
        assert_eq!(back, vec![(999 % 251) as u8 + 1; 100]);
        at
    }

    #[test]
    fn appends_land_in_the_file_and_sealing_cuts_the_preallocation() {
        let (_dir, file) = temp_file(32);
        let mut app = Appender::new(&file, 32, 64 * 1024 * 1024, AppendMode::Mapped);
        assert!(app.is_mapped());
        let at = append_records(&mut app, &file, |_| {});
        let on_disk = file.metadata().expect("metadata").len();
        assert!(
            on_disk >= at && on_disk.is_multiple_of(PREALLOC_ALIGN),
            "{on_disk}"
        );
        app.seal(&file, at).expect("seal");
        assert_eq!(file.metadata().expect("metadata").len(), at);
        // After sealing, appends use pwrite and still land.
        app.append(&file, at, b"tail").expect("append after seal");
        assert_eq!(file.metadata().expect("metadata").len(), at + 4);
    }

    #[test]
    fn a_batch_past_the_mapping_is_written_with_pwrite() {
        let (_dir, file) = temp_file(32);
        let mut app = Appender::new(&file, 32, 4096, AppendMode::Mapped);
        let big = vec![7u8; 10_000];
        app.append(&file, 32, &big).expect("append");
        assert_eq!(file.metadata().expect("metadata").len(), 32 + 10_000);
        app.seal(&file, 32 + 10_000).expect("seal");
        assert_eq!(file.metadata().expect("metadata").len(), 32 + 10_000);
    }

    #[test]
    fn preallocation_never_passes_the_mapping_rounded_to_the_alignment() {
        let (_dir, file) = temp_file(32);
        let mut app = Appender::new(&file, 32, 5000, AppendMode::Mapped);
        app.append(&file, 32, &[1u8; 4000]).expect("append");
        assert_eq!(file.metadata().expect("metadata").len(), 8192);
        app.append(&file, 4032, &[2u8; 968])
            .expect("append to the end");
        app.seal(&file, 5000).expect("seal");
        assert_eq!(file.metadata().expect("metadata").len(), 5000);
    }

    #[test]
    fn written_appends_reserve_blocks_ahead_too_and_sealing_cuts_them() {
        let (_dir, file) = temp_file(32);
        let mut app = Appender::new(&file, 32, 64 * 1024 * 1024, AppendMode::Written);
        assert!(!app.is_mapped());
        let at = append_records(&mut app, &file, |at| {
            // The file never ends at the written length while appends go on: the
            // blocks ahead are reserved, so no fdatasync has a new size to write.
            let on_disk = file.metadata().expect("metadata").len();
            assert!(
                on_disk > at && on_disk.is_multiple_of(PREALLOC_ALIGN),
                "{on_disk} after {at}"
            );
        });
        let on_disk = file.metadata().expect("metadata").len();
        assert!(on_disk - at < PREALLOC_CHUNK + PREALLOC_ALIGN, "{on_disk}");
        app.seal(&file, at).expect("seal");
        assert_eq!(file.metadata().expect("metadata").len(), at);
    }

    /// Under `Written` the blocks reserved ahead hold written zeros, not unwritten
    /// extents for the first `fdatasync` over each to convert. Seen through
    /// `SEEK_DATA`: a file system with unwritten extents (ext4, XFS) reports a range
    /// that was only reserved as a hole, as it does for the mapped appender's here.
    #[cfg(target_os = "linux")]
    #[test]
    fn written_appends_zero_the_blocks_they_reserve() {
        fn data_from(file: &File, at: u64) -> Option<u64> {
            // SAFETY: a plain system call on a descriptor `file` keeps open; it moves
            // the file offset (unused by positioned reads and writes) and touches no
            // memory of this process.
            let rc = unsafe { libc::lseek(file.as_raw_fd(), at as libc::off_t, libc::SEEK_DATA) };
            u64::try_from(rc).ok()
        }
        let probe = PREALLOC_CHUNK / 2;
        let (_dir, zeroed) = temp_file(32);
        let mut app = Appender::new(&zeroed, 32, 64 * 1024 * 1024, AppendMode::Written);
        app.append(&zeroed, 32, &[1u8; 100]).expect("append");
        zeroed.sync_data().expect("sync");
        assert_eq!(data_from(&zeroed, probe), Some(probe));
        let mut back = vec![9u8; 4096];
        zeroed.read_exact_at(&mut back, probe).expect("read");
        assert!(back.iter().all(|&b| b == 0));

        let (_dir, reserved_only) = temp_file(32);
        let mut app = Appender::new(&reserved_only, 32, 64 * 1024 * 1024, AppendMode::Mapped);
        app.append(&reserved_only, 32, &[1u8; 100]).expect("append");
        reserved_only.sync_data().expect("sync");
        assert!(reserved_only.metadata().expect("metadata").len() > probe);
        if data_from(&reserved_only, probe) == Some(probe) {
            eprintln!(
                "note: this file system reports reserved blocks as data; the test shows little here"
            );
        }
    }

    #[test]
    fn the_pwrite_path_appends_too() {
        let (_dir, file) = temp_file(32);
        let mut app = Appender::positioned(32);
        app.append(&file, 32, b"abc").expect("append");
        app.seal(&file, 35).expect("seal");
        assert_eq!(file.metadata().expect("metadata").len(), 35);
    }

    #[test]
    fn a_zero_tail_is_preallocation_only_at_an_aligned_length() {
        let mut bytes = vec![0u8; 8192];
        bytes[..100].fill(9);
        assert!(is_preallocated_tail(&bytes, 100));
        assert!(!is_preallocated_tail(&bytes, 99));
        assert!(!is_preallocated_tail(&bytes[..8000], 100));
        assert!(!is_preallocated_tail(&bytes, 8192));
    }
}
