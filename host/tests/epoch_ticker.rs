//! A thread of the process made the epoch ticker (the shim server's main
//! thread) ticks the engines made after, and no engine starts a ticker
//! thread of its own. A file of its own: it changes how every engine of
//! its process is ticked.
use berth_host::wasm::engine::tick_epochs_here;
use berth_host::wasm::{EngineOptions, WasmEngine};
use std::time::Duration;

fn epoch_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|t| std::fs::read_to_string(t.as_ref().unwrap().path().join("comm")).is_ok_and(|c| c.trim() == "berth-epoch"))
        .count()
}

#[test]
fn the_ticking_thread_ticks_engines_made_after_it_started() {
    let (done_tx, done) = std::sync::mpsc::channel();
    let returned = tick_epochs_here(|stop| {
        std::thread::spawn(move || {
            let engine = WasmEngine::new(&EngineOptions::single()).unwrap();
            let threads = epoch_threads();
            // A guest that spins until the epoch passes its deadline. Should
            // nothing tick, a watchdog does after 20 s, and says so.
            let e = engine.engine().clone();
            let (fired_tx, fired) = std::sync::mpsc::channel();
            let watchdog_engine = e.clone();
            let (cancel_tx, cancel) = std::sync::mpsc::channel::<()>();
            let watchdog = std::thread::spawn(move || {
                if cancel.recv_timeout(Duration::from_secs(20)).is_err() {
                    fired_tx.send(()).unwrap();
                    watchdog_engine.increment_epoch();
                    watchdog_engine.increment_epoch();
                }
            });
            let module = wasmtime::Module::new(&e, r#"(module (func (export "spin") (loop br 0)))"#).unwrap();
            let mut store = wasmtime::Store::new(&e, ());
            store.set_epoch_deadline(2);
            store.epoch_deadline_trap();
            let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
            let spin = instance.get_typed_func::<(), ()>(&mut store, "spin").unwrap();
            let trapped = spin.call(&mut store, ()).is_err();
            let _ = cancel_tx.send(());
            watchdog.join().unwrap();
            done_tx.send((threads, trapped, fired.try_recv().is_ok())).unwrap();
            drop(stop);
        });
        "started"
    });
    assert_eq!(returned, "started");
    let (threads, trapped, watchdog_fired) = done.recv().unwrap();
    assert_eq!(threads, 0, "the engine started a ticker thread of its own");
    assert!(trapped, "the spinning guest never stopped");
    assert!(!watchdog_fired, "nothing ticked the epoch: the watchdog stopped the guest");
    // Once the guard is dropped, engines tick themselves again. (A thread
    // names itself as it starts: its name may show a moment later.)
    let _engine = WasmEngine::new(&EngineOptions::single()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while epoch_threads() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(epoch_threads(), 1, "an engine made after the ticking ended has no ticker thread");
}
