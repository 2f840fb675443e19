;; A reactor-style module with named exports, for `berth run file#export`.
(module
  (memory (export "memory") 1)
  (func (export "answer") (result i32) i32.const 42)
  (func (export "add") (param i32 i32) (result i32)
    (i32.add (local.get 0) (local.get 1))))
