;; A strategy written by hand against docs/STRATEGY_ABI.md, with no SDK: it publishes every trade
;; price as the series `last_price`, buys 0.01 at market on the first trade (and says so in the
;; journal), and keeps "already bought" across restarts through keel_save / keel_restore.
(module
  (import "keel" "series" (func $series (param i32 i32 i32 i32 f64 f64) (result i32)))
  (import "keel" "publish_decimal" (func $publish_decimal (param i32 i64 i32)))
  (import "keel" "place" (func $place (param i32 i32 i64 i32 i64 i32 i32) (result i32)))
  (import "keel" "log" (func $log (param i32 i32 i32)))
  (import "keel" "save_state" (func $save_state (param i32 i32)))

  ;; Page 0: constants and scratch; page 1: the input buffer keel_alloc hands out.
  (memory (export "memory") 2)
  (data (i32.const 0) "{\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}")
  (data (i32.const 256) "last_price")
  (data (i32.const 300) "bought 0.01 at market")

  (global $bought (mut i32) (i32.const 0))
  (global $series (mut i32) (i32.const -1))

  (func (export "keel_abi_version") (result i32) (i32.const 1))

  ;; One input at a time: the host copies it in and calls at once.
  (func (export "keel_alloc") (param $len i32) (result i32)
    (if (i32.gt_u (local.get $len) (i32.const 65536)) (then (return (i32.const -1))))
    (i32.const 65536))

  ;; The schema: 62 bytes at offset 0, packed as (ptr << 32) | len.
  (func (export "keel_params_schema") (result i64) (i64.const 62))

  (func (export "keel_init") (param $ptr i32) (param $len i32) (result i32)
    (global.set $series
      (call $series (i32.const 256) (i32.const 10) (i32.const 0) (i32.const 0)
        (f64.const nan) (f64.const nan)))
    (i32.const 0))

  (func (export "keel_on_trade")
    (param $ts i64) (param $price_m i64) (param $price_s i32)
    (param $qty_m i64) (param $qty_s i32) (param $side i32) (result i32)
    (call $publish_decimal (global.get $series) (local.get $price_m) (local.get $price_s))
    (if (i32.eqz (global.get $bought))
      (then
        ;; buy (0), market (0), qty 0.01 = 1 × 10^-2, no price, tag 0
        (drop (call $place (i32.const 0) (i32.const 0) (i64.const 1) (i32.const 2)
          (i64.const 0) (i32.const 0) (i32.const 0)))
        (call $log (i32.const 0) (i32.const 300) (i32.const 21))
        (global.set $bought (i32.const 1))))
    (i32.const 0))

  ;; Quotes, fills and timers arrive as JSON; this strategy needs none of them.
  (func (export "keel_on_event") (param $ptr i32) (param $len i32) (result i32) (i32.const 0))

  (func (export "keel_save") (result i32)
    (i32.store (i32.const 512) (global.get $bought))
    (call $save_state (i32.const 512) (i32.const 4))
    (i32.const 0))

  (func (export "keel_restore") (param $ptr i32) (param $len i32) (result i32)
    (if (i32.ne (local.get $len) (i32.const 4)) (then (return (i32.const 1))))
    (global.set $bought (i32.load (local.get $ptr)))
    (i32.const 0))
)
