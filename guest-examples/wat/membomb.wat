;; Grows memory 64 KiB at a time until memory.grow refuses, then exits
;; with code 7 via proc_exit: the refusal is seen inside the guest.
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $grow
      (if (i32.ne (memory.grow (i32.const 1)) (i32.const -1))
        (then (br $grow))))
    (call $exit (i32.const 7))))
