//! The parallel part of a conversion: worker threads read and prepare files; the calling thread
//! receives the results and hands them on strictly in record order, so what is written does not
//! depend on the number of threads. At most `window` files are in flight.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;

use crate::convert::scan::Item;
use crate::convert::transcode::{Prepared, Recipe, Scratch, prepare};
use crate::error::{Error, Result};
use crate::fsutil::read_regular;

/// Files larger than this are skipped unread (a record's length is a u32, and no real image
/// comes near it).
const MAX_FILE_BYTES: u64 = 1 << 30;

/// Prepares `items[order[pos]]` for every `pos` in `from..order.len()` on `threads` threads and
/// calls `sink` with each outcome in order of `pos`. Stops early when `sink` fails or breaks.
pub(crate) fn run(
    items: &[Item],
    order: &[usize],
    from: usize,
    recipe: &Recipe,
    threads: usize,
    sink: &mut dyn FnMut(usize, Result<Prepared, String>) -> Result<ControlFlow<()>>,
) -> Result<ControlFlow<()>> {
    let n = order.len();
    let window = threads * 8;
    let (job_tx, job_rx) = crossbeam_channel::unbounded::<usize>();
    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let job_rx = job_rx.clone();
            let done_tx = done_tx.clone();
            scope.spawn(move || {
                let mut scratch = Scratch::default();
                for pos in job_rx {
                    let item = &items[order[pos]];
                    let outcome = read(item).and_then(|raw| {
                        // A decoder bug on a hostile file skips that file, not the conversion.
                        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            prepare(raw, recipe, &mut scratch)
                        }));
                        result.unwrap_or_else(|_| {
                            scratch = Scratch::default();
                            Err("decoder panicked on this file".into())
                        })
                    });
                    if done_tx.send((pos, outcome)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let mut dispatched = from;
        let mut next = from;
        let mut ready = BTreeMap::new();
        let flow = loop {
            while dispatched < n && dispatched - next < window {
                // The workers hold the receiver until this function returns.
                let _ = job_tx.send(dispatched);
                dispatched += 1;
            }
            if next == n {
                break Ok(ControlFlow::Continue(()));
            }
            let Ok((pos, outcome)) = done_rx.recv() else {
                break Err(Error::Config("conversion worker threads stopped".into()));
            };
            ready.insert(pos, outcome);
            let mut stop = None;
            while let Some(outcome) = ready.remove(&next) {
                match sink(next, outcome) {
                    Ok(ControlFlow::Continue(())) => next += 1,
                    other => {
                        stop = Some(other);
                        break;
                    }
                }
            }
            if let Some(stop) = stop {
                break stop;
            }
        };
        // Ending the job stream lets the workers finish their current file and exit.
        drop(job_tx);
        flow
    })
}

/// The file's bytes, or why it is skipped. Only a regular file is read, and only up to its size
/// (a FIFO would block, `/dev/zero` never ends).
fn read(item: &Item) -> Result<Vec<u8>, String> {
    read_regular(&item.path, "read", "file size", MAX_FILE_BYTES).map_err(|e| match e {
        Error::Limit { value, max, .. } => {
            format!("file of {value} bytes exceeds the limit of {max} bytes")
        }
        Error::Io { source, .. } => format!("cannot read: {source}"),
        other => format!("cannot read: {other}"),
    })
}
