//! Compose files, read exactly as `docker stack deploy` (docker/cli v20.10) reads them and turned into
//! the Swarm objects it would create. Pure code: no I/O, no database, unit-tested beside each step.
//!
//! The pipeline, one module per step:
//! 1. [`yaml`]: text → a tree with positions (YAML 1.1 scalars, anchors, merge keys, size bounds);
//! 2. [`interpolate`]: `${VAR}` in string values, from the template's variables;
//! 3. [`load`] (with [`read`]): the tree → a typed [`model::Project`], every error with its path and line,
//!    the CLI's warnings for keys Swarm ignores;
//! 4. [`policy`]: the tenant's admission policy over the project;
//! 5. [`convert`]: project + stack name → network, secret, config and service specs;
//! 6. [`mesh`]: warnings for what a cluster without IPVS cannot serve.
//!
//! docs/compose-translation.md is the rule book each step follows.

pub mod convert;
pub mod interpolate;
pub mod load;
pub mod mesh;
pub mod model;
pub mod policy;
pub mod read;
pub mod yaml;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use axum::http::StatusCode;
use berth_types::FieldError;

use crate::error::ApiError;

/// The largest Compose document accepted, in bytes.
pub const MAX_COMPOSE_BYTES: usize = 512 * 1024;

/// One problem (or warning) in a Compose file: where, and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// Dotted path with list indexes, e.g. `services.web.ports[0]`; empty for the whole document.
    pub path: String,
    pub message: String,
    pub line: u32,
    pub column: u32,
}

#[derive(Debug, Default)]
pub struct Diagnostics {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    /// Paths of values that use a variable with no value (and no default): a template is checked before
    /// its variables are known, so what goes wrong there is not yet an error.
    pub unresolved: Vec<String>,
}

pub(crate) fn join_path(parts: &[String]) -> String {
    let mut out = String::new();
    for p in parts {
        if !out.is_empty() && !p.starts_with('[') {
            out.push('.');
        }
        out.push_str(p);
    }
    out
}

impl Diagnostics {
    pub fn error(&mut self, path: &str, line: u32, column: u32, message: impl Into<String>) {
        self.errors.push(Diagnostic { path: path.to_owned(), message: message.into(), line, column });
    }

    pub fn warn(&mut self, path: &str, line: u32, column: u32, message: impl Into<String>) {
        self.warnings.push(Diagnostic { path: path.to_owned(), message: message.into(), line, column });
    }

    /// Puts errors and warnings in document order (stable: same-place ones keep the order found).
    pub fn sort(&mut self) {
        self.errors.sort_by_key(|d| (d.line, d.column));
        self.warnings.sort_by_key(|d| (d.line, d.column));
    }

    pub fn error_at(&mut self, path: &[String], line: u32, column: u32, message: impl Into<String>) {
        self.error(&join_path(path), line, column, message);
    }

    pub fn warn_at(&mut self, path: &[String], line: u32, column: u32, message: impl Into<String>) {
        self.warn(&join_path(path), line, column, message);
    }
}

/// What a Compose file is read with.
pub struct Input<'a> {
    pub text: &'a str,
    /// The template's files (`env_file`, secret and config `file:`), by relative path.
    pub files: &'a BTreeMap<String, String>,
    /// Values for `${VAR}`.
    pub variables: &'a BTreeMap<String, String>,
}

/// A Compose file that loaded without errors.
#[derive(Debug)]
pub struct Loaded {
    pub project: model::Project,
    pub warnings: Vec<Diagnostic>,
}

fn parse(text: &str) -> Result<yaml::Node, Vec<Diagnostic>> {
    let whole = |message: String, line, column| vec![Diagnostic { path: String::new(), message, line, column }];
    if text.len() > MAX_COMPOSE_BYTES {
        return Err(whole(format!("the Compose file is {} bytes; the limit is {MAX_COMPOSE_BYTES}", text.len()), 1, 1));
    }
    yaml::parse(text).map_err(|e| whole(format!("not valid YAML: {}", e.message), e.line, e.column))
}

/// Reads a Compose file: every error at once, or the project with its warnings.
pub fn load(input: &Input<'_>, policy: &policy::Policy) -> Result<Loaded, Vec<Diagnostic>> {
    let mut root = parse(input.text)?;
    let mut diags = Diagnostics::default();
    interpolate::interpolate(&mut root, input.variables, &mut Vec::new(), &mut diags);
    let mut project = load::project(&root, input, &mut diags);
    if diags.errors.is_empty() {
        policy::check(policy, &mut project, &mut diags);
    }
    diags.sort();
    if diags.errors.is_empty() { Ok(Loaded { project, warnings: diags.warnings }) } else { Err(diags.errors) }
}

/// What a template's Compose text declares, once checked.
#[derive(Debug)]
pub struct TemplateInfo {
    pub services: Vec<String>,
    pub variables: BTreeMap<String, interpolate::Reference>,
    pub warnings: Vec<Diagnostic>,
}

/// Checks a template before its variables are known: everything that does not depend on a variable
/// without a default must be right. Admission policy is the deploy's business (it is per tenant and
/// may change).
pub fn check_template(text: &str, files: &BTreeMap<String, String>) -> Result<TemplateInfo, Vec<Diagnostic>> {
    let variables = variables(text);
    let empty = BTreeMap::new();
    let input = Input { text, files, variables: &empty };
    let mut root = parse(text)?;
    let mut diags = Diagnostics::default();
    interpolate::interpolate(&mut root, &empty, &mut Vec::new(), &mut diags);
    let project = load::project(&root, &input, &mut diags);
    diags.sort();
    let depends = |path: &str| {
        diags.unresolved.iter().any(|u| path == u || path.starts_with(&format!("{u}.")) || path.starts_with(&format!("{u}[")))
    };
    let errors: Vec<Diagnostic> = diags.errors.iter().filter(|d| !depends(&d.path)).cloned().collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    let warnings = diags.warnings.iter().filter(|d| !depends(&d.path)).cloned().collect();
    Ok(TemplateInfo { services: project.services.keys().cloned().collect(), variables, warnings })
}

/// The variables a Compose text uses (without loading it): name → (default, required).
pub fn variables(text: &str) -> BTreeMap<String, interpolate::Reference> {
    let mut out = BTreeMap::new();
    if let Ok(root) = yaml::parse(text) {
        interpolate::references(&root, &mut out);
    }
    out
}

/// Field errors for a problem response; `prefix` names the request field holding the Compose text.
pub fn field_errors(prefix: &str, diags: &[Diagnostic]) -> Vec<FieldError> {
    diags
        .iter()
        .map(|d| FieldError {
            field: if d.path.is_empty() { prefix.to_owned() } else { format!("{prefix}.{}", d.path) },
            message: d.message.clone(),
            line: Some(u64::from(d.line)),
            column: Some(u64::from(d.column)),
        })
        .collect()
}

/// The 422 for a Compose file that does not load: every error, each with its path and position.
pub fn invalid(prefix: &str, diags: &[Diagnostic]) -> ApiError {
    let errors = field_errors(prefix, diags);
    let detail = diags
        .iter()
        .map(|d| if d.path.is_empty() { d.message.clone() } else { format!("{}: {}", d.path, d.message) })
        .collect::<Vec<_>>()
        .join("; ");
    let mut e = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-compose", detail);
    if let Some(first) = diags.first() {
        e = e.with_location(u64::from(first.line), u64::from(first.column));
    }
    e.errors = errors;
    e
}
