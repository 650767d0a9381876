//! clap value parsers for the protocol names in `muster_core::protocol`,
//! so each list exists once in the workspace.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use muster_core::protocol::{Harness, HookEvent};

/// The hook events, by their route names.
pub fn hook_events() -> impl TypedValueParser<Value = HookEvent> {
    let names = HookEvent::ALL.map(HookEvent::as_str);
    PossibleValuesParser::new(names).try_map(|name| {
        HookEvent::parse(&name).ok_or_else(|| format!("unknown hook event {name:?}"))
    })
}

/// The four harnesses.
pub fn harnesses() -> impl TypedValueParser<Value = Harness> {
    let names = Harness::ALL.map(Harness::as_str);
    PossibleValuesParser::new(names)
        .try_map(|name| Harness::parse(&name).ok_or_else(|| format!("unknown harness {name:?}")))
}
