;; Grows memory 64 KiB at a time until memory.grow refuses, then traps
;; (`unreachable`), as Rust and most language runtimes abort on a failed
;; allocation.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $grow
      (if (i32.ne (memory.grow (i32.const 1)) (i32.const -1))
        (then (br $grow))))
    unreachable))
