//! `variables`: the app's variables and secrets, from the node's
//! configuration (Spin's variables). A secret's value is also handed to the
//! session log, which writes `[secret]` wherever it appears. Allowed while
//! running and terminating.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use super::{Common, Factor, Gate, Phases, Refused, SessionContext, WasiStore};
use crate::bindings::scenario::variables;
use crate::bindings::{Capability, Refusal, RefusalKind};
use crate::log::Secrets;

/// An app's variables, by name.
#[derive(Debug, Default)]
pub struct Variables {
    values: BTreeMap<String, Variable>,
    secrets: Secrets,
}

/// One variable's value, and whether it is a secret.
#[derive(Debug, Clone)]
pub struct Variable {
    pub value: String,
    pub secret: bool,
}

impl Variables {
    pub fn new(values: BTreeMap<String, Variable>) -> Self {
        let secrets = Secrets::new(
            values
                .values()
                .filter(|variable| variable.secret)
                .map(|variable| variable.value.clone()),
        );
        Variables { values, secrets }
    }

    pub fn get(&self, name: &str) -> Option<&Variable> {
        self.values.get(name)
    }

    /// The secrets' values, for the session log to hide.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }
}

pub struct AppVariables {
    variables: Arc<Variables>,
}

pub struct VariablesView<'a> {
    variables: &'a Variables,
    gate: &'a Gate,
}

impl HasData for AppVariables {
    type Data<'a> = VariablesView<'a>;
}

impl Factor for AppVariables {
    type View = AppVariables;

    fn new(cx: &SessionContext<'_>) -> Self {
        AppVariables {
            variables: Arc::clone(&cx.app.variables),
        }
    }

    fn view<'a>(&'a mut self, common: Common<'a>) -> VariablesView<'a> {
        VariablesView {
            variables: &self.variables,
            gate: common.gate,
        }
    }

    fn link<T: WasiStore>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> VariablesView<'_>,
    ) -> wasmtime::Result<()> {
        variables::add_to_linker::<T, AppVariables>(linker, get)
    }
}

impl variables::Host for VariablesView<'_> {
    fn get(&mut self, name: String) -> wasmtime::Result<Result<String, Refusal>> {
        let value = self.gate.check(Phases::UntilTerminated).and_then(|()| {
            let variable = self.variables.get(&name).ok_or_else(|| Refused {
                kind: RefusalKind::Unknown,
                reason: format!("the app has no variable named `{name}`"),
            })?;
            Ok(variable.value.clone())
        });
        Ok(self.gate.book(Capability::Variables, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::Phase;
    use crate::capabilities::fixture::Fixture;

    #[test]
    fn a_variable_is_read_until_terminated_and_an_unknown_name_is_named() {
        let fixture = Fixture::new(Default::default());
        let variables = Variables::new(BTreeMap::from([(
            "greeting".to_owned(),
            Variable {
                value: "hi".into(),
                secret: false,
            },
        )]));
        let mut gate = fixture.gate();
        let mut view = VariablesView {
            variables: &variables,
            gate: &gate,
        };
        assert_eq!(
            variables::Host::get(&mut view, "greeting".into())
                .unwrap()
                .unwrap(),
            "hi"
        );
        let refusal = variables::Host::get(&mut view, "nope".into())
            .unwrap()
            .unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::Unknown);
        assert!(refusal.reason.contains("`nope`"), "{}", refusal.reason);

        gate.set_phase(Phase::Terminated);
        let mut view = VariablesView {
            variables: &variables,
            gate: &gate,
        };
        let refusal = variables::Host::get(&mut view, "greeting".into())
            .unwrap()
            .unwrap_err();
        assert_eq!(refusal.kind, RefusalKind::Phase);
    }
}
