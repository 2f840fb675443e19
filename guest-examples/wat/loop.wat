;; Spins forever; must be stopped by a timeout, CPU limit or signal.
(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $l br $l)))
