//! Guests written in WAT, turned into components here: the cheapest way to
//! write a guest that traps, loops, or breaks the rules on purpose.

use std::collections::BTreeMap;

use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::Resolve;

use super::repo_root;

/// The `app-events` exports and their core signatures under the canonical
/// ABI: (name, i32 parameters, returns a pointer to its result).
const EXPORTS: &[(&str, usize, bool)] = &[
    ("started", 6, false),
    ("call-alerting", 9, false),
    ("http-request", 8, true),
    ("websocket", 5, false),
    ("new-websocket-failed", 2, false),
    ("terminating", 0, false),
    ("terminated", 0, false),
    ("timer-fired", 1, false),
    ("call-connected", 1, false),
    ("call-disconnected", 1, false),
    ("call-failed", 4, false),
    ("call-message-received", 3, false),
    ("call-tone-received", 3, false),
    ("call-playback-finished", 1, false),
    ("websocket-message", 4, false),
    ("websocket-closed", 4, false),
];

/// Where the default http-request response lives: 200, no headers, no body.
const RESPONSE_AT: u32 = 1024;

/// A scenario in WAT: every handler does nothing (http-request answers 200)
/// unless `handlers` gives it a body. `imports` and `functions` are spliced
/// into the module as they are.
pub fn scenario(handlers: &[(&str, &str)], imports: &str, functions: &str) -> Vec<u8> {
    let handlers: BTreeMap<_, _> = handlers.iter().copied().collect();
    for name in handlers.keys() {
        assert!(
            EXPORTS.iter().any(|(export, ..)| export == name),
            "no handler named {name}"
        );
    }
    let mut wat = format!(
        r#"(module
  {imports}
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const {RESPONSE_AT}) "\c8")
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $at i32)
    ;; Bump allocation, aligned; grows memory when it runs out.
    (local.set $at
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
        (i32.xor (i32.sub (local.get 2) (i32.const 1)) (i32.const -1))))
    (global.set $heap (i32.add (local.get $at) (local.get 3)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.shr_u (local.get 3) (i32.const 16)) (i32.const 1))))))
    (local.get $at))
  {functions}
"#
    );
    for (name, params, returns) in EXPORTS {
        let params = " i32".repeat(*params);
        let params = if params.is_empty() {
            String::new()
        } else {
            format!("(param{params})")
        };
        let result = if *returns { "(result i32)" } else { "" };
        let default = if *returns {
            format!("(i32.const {RESPONSE_AT})")
        } else {
            String::new()
        };
        let body = handlers.get(name).copied().unwrap_or(&default);
        wat.push_str(&format!(
            "  (func (export \"sessionbox:scenario/app-events@0.2.0#{name}\") {params} {result}\n    {body})\n"
        ));
    }
    wat.push_str(")\n");
    // app-events only: a 0.2.0 scenario, which today's host runs as it is.
    component(&wat, None, "sessionbox:scenario/scenario@0.2.0")
}

/// Encodes a core module in WAT as a component of `world`, from the
/// project's WIT plus, optionally, one more WIT package given as text.
pub fn component(wat: &str, extra_wit: Option<&str>, world: &str) -> Vec<u8> {
    let mut resolve = Resolve::default();
    let (scenario, _) = resolve
        .push_dir(repo_root().join("wit"))
        .expect("parsing wit/");
    let main = match extra_wit {
        Some(text) => resolve
            .push_str("extra.wit", text)
            .expect("parsing extra WIT"),
        None => scenario,
    };
    let world = resolve
        .select_world(&[main], Some(world))
        .expect("selecting the world");
    let mut module = wat::parse_str(wat).expect("parsing WAT");
    wit_component::embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8)
        .expect("embedding component metadata");
    ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .expect("reading the module")
        .encode()
        .expect("encoding the component")
}
