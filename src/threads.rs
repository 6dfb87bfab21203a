//! Thread bookkeeping shared by the worker and the emulator.

use std::thread::JoinHandle;

/// Adds `handle` to `handles` after joining (and dropping) the ones that have
/// finished, so a long-running process holds no dead threads' stacks.
pub(crate) fn push_reaping(handles: &mut Vec<JoinHandle<()>>, handle: JoinHandle<()>) {
    let mut i = 0;
    while i < handles.len() {
        if handles[i].is_finished() {
            let _ = handles.swap_remove(i).join();
        } else {
            i += 1;
        }
    }
    handles.push(handle);
}

#[cfg(test)]
mod tests;
