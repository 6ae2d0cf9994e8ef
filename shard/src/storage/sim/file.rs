//! An open file of the simulated disk: writes that stay pending until an
//! fdatasync covers them, reads of what was written, and the faults the
//! disk's profile asks for.

use std::path::Path;

use crate::{
    error::{Error, Result},
    storage::{
        sim::{assert_aligned, os_error, Pending, SimBuffer, SimDisk, SimFile, EIO, ENOSPC},
        StorageFile,
    },
};

impl StorageFile for SimFile {
    type Buffer = SimBuffer;
    type ReadBuf = Vec<u8>;

    fn path(&self) -> &Path {
        &self.path
    }

    /// The data reaches the written image when the write is issued, as a
    /// submitted io_uring write reaches the device even if its submitter
    /// dies before the completion; it completes after the delay.
    async fn write_at(&self, buf: SimBuffer, pos: u64) -> Result<usize> {
        let disk = &self.disk;
        // The strictest disk: O_DIRECT wants block-aligned positions and
        // lengths, and no two writes in flight may overlap.
        assert_aligned("write", &self.path, pos, buf.0.len());
        let aimed = (pos as usize, buf.0.len());
        if let Some(other) =
            self.inode.borrow().pending.iter().find(|p| {
                !p.done && p.aimed.0 < aimed.0 + aimed.1 && aimed.0 < p.aimed.0 + p.aimed.1
            })
        {
            panic!(
                "two writes in flight overlap in {}: [{}, +{}) and [{}, +{})",
                self.path.display(),
                other.aimed.0,
                other.aimed.1,
                aimed.0,
                aimed.1
            );
        }
        disk.begin("write", &self.path, pos, buf.0.len() as u64)?;
        if disk.chance(|f| f.write_eio) {
            disk.0.borrow_mut().counts.write_eio += 1;
            return Err(Error::io_at(
                "write",
                &self.path,
                pos,
                std::io::Error::from_raw_os_error(EIO),
            ));
        }
        let full = {
            let d = disk.0.borrow();
            let grow =
                (pos as usize + buf.0.len()).saturating_sub(self.inode.borrow().written.len());
            d.faults
                .capacity
                .is_some_and(|cap| SimDisk::used(&d) + grow as u64 > cap)
        };
        if full || disk.chance(|f| f.write_enospc) {
            disk.0.borrow_mut().counts.enospc += 1;
            return Err(os_error("write", &self.path, ENOSPC));
        }
        let mut data = buf.0;
        let mut at = pos as usize;
        let id = {
            let mut d = disk.0.borrow_mut();
            d.next_write += 1;
            d.next_write
        };
        {
            let mut d = disk.0.borrow_mut();
            let d = &mut *d;
            if d.faults.misdirect > 0.0 && d.rng.f64() < d.faults.misdirect {
                d.counts.misdirected += 1;
                let shift = d.rng.usize(1..=4) * crate::storage::BLOCK_SIZE as usize;
                at = if d.rng.bool() {
                    at + shift
                } else {
                    at.saturating_sub(shift)
                };
            }
            if d.faults.stored_flip > 0.0 && d.rng.f64() < d.faults.stored_flip && !data.is_empty()
            {
                d.counts.stored_flips += 1;
                let bit = d.rng.usize(..data.len() * 8);
                data[bit / 8] ^= 1 << (bit % 8);
            }
            let mut inode = self.inode.borrow_mut();
            if inode.written.len() < at + data.len() {
                inode.written.resize(at + data.len(), 0);
            }
            inode.written[at..at + data.len()].copy_from_slice(&data);
            inode.pending.push(Pending {
                id,
                start: at,
                len: data.len(),
                aimed,
                done: false,
            });
        }
        disk.delay().await;
        if let Some(p) = self
            .inode
            .borrow_mut()
            .pending
            .iter_mut()
            .find(|p| p.id == id)
        {
            p.done = true;
        }
        Ok(data.len())
    }

    async fn read_at(&self, pos: u64, len: usize) -> Result<Vec<u8>> {
        assert_aligned("read", &self.path, pos, len);
        self.disk.begin("read", &self.path, pos, len as u64)?;
        self.disk.delay().await;
        let mut data = {
            let inode = self.inode.borrow();
            let start = (pos as usize).min(inode.written.len());
            let end = (start + len).min(inode.written.len());
            inode.written[start..end].to_vec()
        };
        if !data.is_empty() && self.disk.chance(|f| f.read_flip) {
            let mut d = self.disk.0.borrow_mut();
            d.counts.read_flips += 1;
            let bit = d.rng.usize(..data.len() * 8);
            data[bit / 8] ^= 1 << (bit % 8);
        }
        Ok(data)
    }

    async fn fdatasync(&self) -> Result<()> {
        self.disk.begin("fdatasync", &self.path, 0, 0)?;
        let covered: Vec<u64> = {
            let inode = self.inode.borrow();
            inode
                .pending
                .iter()
                .filter(|p| p.done)
                .map(|p| p.id)
                .collect()
        };
        self.disk.delay().await;
        // The disk may have died while this sync was in flight.
        self.disk.begin("fdatasync done", &self.path, 0, 0)?;
        if self.disk.chance(|f| f.sync_eio) {
            self.disk.0.borrow_mut().counts.sync_eio += 1;
            return Err(os_error("fdatasync", &self.path, EIO));
        }
        let mut inode = self.inode.borrow_mut();
        let inode = &mut *inode;
        // The file's size is durable; of the data, the writes that had
        // completed when the sync was issued.
        let len = inode.written.len();
        inode.durable.resize(len, 0);
        for p in inode.pending.iter().filter(|p| covered.contains(&p.id)) {
            let end = (p.start + p.len).min(len);
            if p.start < end {
                inode.durable[p.start..end].copy_from_slice(&inode.written[p.start..end]);
            }
        }
        inode.pending.retain(|p| !covered.contains(&p.id));
        Ok(())
    }

    async fn allocate(&self, len: u64) -> Result<()> {
        self.disk.begin("allocate", &self.path, len, 0)?;
        let grow = len.saturating_sub(self.inode.borrow().written.len() as u64);
        let full = {
            let d = self.disk.0.borrow();
            d.faults
                .capacity
                .is_some_and(|cap| SimDisk::used(&d) + grow > cap)
        };
        if full {
            self.disk.0.borrow_mut().counts.enospc += 1;
            return Err(os_error("fallocate", &self.path, ENOSPC));
        }
        let mut inode = self.inode.borrow_mut();
        if (inode.written.len() as u64) < len {
            inode.written.resize(len as usize, 0);
        }
        Ok(())
    }

    async fn size(&self) -> Result<u64> {
        self.disk.begin("size", &self.path, 0, 0)?;
        Ok(self.inode.borrow().written.len() as u64)
    }

    async fn close(self) -> Result<()> {
        Ok(())
    }
}
