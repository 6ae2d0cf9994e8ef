//! Closing the WAL after its commit task ended: the last segment's
//! sidecar, the clean-shutdown marker, and every file closed.

use std::rc::Rc;

use crate::{
    error::{Error, Result},
    format::clean_marker,
    storage::{Storage, StorageFile},
    wal::{roll::write_sidecar, state::Inner},
};

/// After the commit task ended on close: record a clean shutdown (if no
/// failure), close the files, release any waiter.
pub(super) async fn finish_close<S: Storage>(inner: &Rc<Inner<S>>) -> Result<()> {
    let (failed, segments, spare, written_at, damaged_tail) = {
        let mut st = inner.state.borrow_mut();
        (
            st.failed.clone(),
            std::mem::take(&mut st.segments),
            st.spare.take(),
            st.written_at,
            st.damaged_tail,
        )
    };
    inner.written.stop();
    inner.durable.stop();
    if let Some(spare) = spare {
        // A half-prepared spare is removed on the next open.
        let _ = spare.await;
    }
    let result = match failed {
        Some(e) => Err(Error::Failed(e)),
        // With the last segment's sidecar and the marker, the next open
        // scans nothing.
        None if written_at.0 > 0 && damaged_tail != Some(written_at.0) => {
            write_sidecar(inner, written_at.0).await;
            clean_marker::write(&inner.storage, &inner.config, written_at).await
        }
        None => Ok(()),
    };
    // Close the files whatever happened: a file only dropped is closed
    // later by the executor, which may be gone by then (a leaked
    // descriptor keeps the file system busy).
    for (_, file) in segments {
        if let Ok(file) = Rc::try_unwrap(file) {
            let closed = file.close().await;
            if result.is_ok() {
                closed?;
            }
        }
    }
    result
}
