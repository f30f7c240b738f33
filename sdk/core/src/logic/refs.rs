//! `$evaluators`, shared: each is compiled (and sized) once per snapshot however many
//! rules reference it, so that a large evaluator referenced everywhere is held once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value as Json;

use super::compile::{CompileCx, compile};
use super::expr::{CompileError, Expr};

/// Evaluators compiled once per snapshot.
#[derive(Default)]
pub(crate) struct Shared {
    pub(super) compiled: RefCell<HashMap<String, Result<Arc<Expr>, CompileError>>>,
    pub(super) sizes: RefCell<HashMap<String, usize>>,
}

/// `{"$ref": name}`: the evaluator, compiled on first use and shared from then on.
pub(super) fn compile_ref(raw: &Json, cx: &CompileCx<'_>) -> Result<Expr, CompileError> {
    let Json::String(name) = raw else {
        return Err(CompileError(
            "\"$ref\" must name an evaluator with a string".into(),
        ));
    };
    if cx.flag_key.is_none() {
        return Err(CompileError(format!(
            "evaluators cannot reference other evaluators (\"$ref\": \"{name}\")"
        )));
    }
    if let Some(done) = cx.shared.compiled.borrow().get(name.as_str()) {
        return done.clone().map(Expr::Ref);
    }
    let Some(body) = cx.evaluators.get(name) else {
        return Err(CompileError(format!(
            "\"$ref\": \"{name}\" names no evaluator in $evaluators"
        )));
    };
    let inner = CompileCx {
        flag_key: None,
        ..*cx
    };
    let done = compile(body, &inner).map(Arc::new);
    cx.shared
        .compiled
        .borrow_mut()
        .insert(name.clone(), done.clone());
    done.map(Expr::Ref)
}
