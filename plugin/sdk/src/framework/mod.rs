//! A small framework for engines: paths with typed fields, operations,
//! existence checks, help and the periodic function, in the manner of the
//! Go SDK's `framework` package.

mod fields;
mod help;
mod openapi;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use regex::Regex;

pub use fields::{Field, FieldData, FieldType, parse_duration};

use crate::logical::{LogicalError, Operation, Request, Response};
use crate::storage::Storage;

/// A boxed future, as handlers return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// What a handler answers.
pub type HandlerResult = Result<Option<Response>, LogicalError>;
/// A path's handler for one operation.
pub type Handler = Arc<dyn Fn(Request, FieldData) -> BoxFuture<HandlerResult> + Send + Sync>;
/// Whether the object a create/update names exists.
pub type ExistenceCheck = Arc<dyn Fn(Request, FieldData) -> BoxFuture<Result<bool, LogicalError>> + Send + Sync>;
/// Work the host's periodic call triggers.
pub type PeriodicFunc = Arc<dyn Fn(Arc<dyn Storage>) -> BoxFuture<Result<(), LogicalError>> + Send + Sync>;
/// Start-up work, run with storage available.
pub type InitializeFunc = Arc<dyn Fn(Arc<dyn Storage>) -> BoxFuture<Result<(), LogicalError>> + Send + Sync>;
/// Reaction to a storage key changed elsewhere (standbys, replicas).
pub type InvalidateFunc = Arc<dyn Fn(&str) + Send + Sync>;

/// Wraps an async function as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Request, FieldData) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    Arc::new(move |req, data| Box::pin(f(req, data)))
}

/// Wraps an async function that also receives shared state (the mount's
/// in-memory state, say) as a [`Handler`].
pub fn stateful<S, F, Fut>(state: &Arc<S>, f: F) -> Handler
where
    S: Send + Sync + 'static + ?Sized,
    F: Fn(Arc<S>, Request, FieldData) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    let state = state.clone();
    Arc::new(move |req, data| Box::pin(f(state.clone(), req, data)))
}

/// Wraps an async function as an [`ExistenceCheck`].
pub fn existence_check<F, Fut>(f: F) -> ExistenceCheck
where
    F: Fn(Request, FieldData) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<bool, LogicalError>> + Send + 'static,
{
    Arc::new(move |req, data| Box::pin(f(req, data)))
}

/// The regex of one URL segment (anything but `/`) captured as field
/// `name`. It is deliberately wide: the handler checks the name and answers
/// a bad one with a 400 naming the field, where a narrow pattern would turn
/// it into a bare 404 "unsupported path".
pub fn name_segment(name: &str) -> String {
    format!(r"(?P<{name}>[^/]+)")
}

/// One operation of a path.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // holds a closure; `Path`'s Debug names the operations
pub struct PathOperation {
    /// The operation.
    pub operation: Operation,
    /// What it does, for help.
    pub summary: &'static str,
    /// The handler.
    pub handler: Handler,
    /// Whether it runs on the active node only: on a standby serving
    /// reads it is answered with the read-only error before the handler
    /// runs, and the server runs it on the active node (Go plugins'
    /// `ForwardPerformanceStandby`). For operations that write, generate
    /// key material, or record a decision, so that nothing is done twice.
    pub on_active_node: bool,
}

/// One URL pattern of the engine, with its fields and operations.
#[derive(Clone)]
pub struct Path {
    /// The regex, as written (without anchors).
    pub pattern: String,
    regex: Regex,
    /// Declared fields, including those captured from the URL.
    pub fields: Vec<Field>,
    /// Supported operations.
    pub operations: Vec<PathOperation>,
    /// Decides create versus update; without it every write is an update.
    pub existence_check: Option<ExistenceCheck>,
    /// One line for help.
    pub synopsis: &'static str,
    /// Longer help.
    pub description: &'static str,
}

impl std::fmt::Debug for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ops: Vec<&str> = self.operations.iter().map(|o| o.operation.as_str()).collect();
        f.debug_struct("Path").field("pattern", &self.pattern).field("operations", &ops).finish()
    }
}

impl Path {
    /// A path matching `pattern` (anchored at both ends).
    ///
    /// # Panics
    /// When the pattern is not a valid regex: patterns are constants of the
    /// engine, so this is a programming error found by any test.
    pub fn new(pattern: impl Into<String>) -> Self {
        let pattern = pattern.into();
        #[allow(clippy::expect_used)]
        let regex = Regex::new(&format!("^{pattern}$")).expect("path patterns are valid regexes");
        Self {
            pattern,
            regex,
            fields: Vec::new(),
            operations: Vec::new(),
            existence_check: None,
            synopsis: "",
            description: "",
        }
    }

    /// Adds a field.
    pub fn field(mut self, field: Field) -> Self {
        self.fields.push(field);
        self
    }

    /// Adds an operation.
    pub fn operation(mut self, operation: Operation, summary: &'static str, handler: Handler) -> Self {
        self.operations.push(PathOperation { operation, summary, handler, on_active_node: false });
        self
    }

    /// Adds an operation that runs on the active node only (see
    /// [`PathOperation::on_active_node`]).
    pub fn operation_on_active_node(mut self, operation: Operation, summary: &'static str, handler: Handler) -> Self {
        self.operations.push(PathOperation { operation, summary, handler, on_active_node: true });
        self
    }

    /// Sets the existence check.
    pub fn exists(mut self, check: ExistenceCheck) -> Self {
        self.existence_check = Some(check);
        self
    }

    /// Sets the help texts.
    pub fn help(mut self, synopsis: &'static str, description: &'static str) -> Self {
        self.synopsis = synopsis;
        self.description = description;
        self
    }

    /// The raw data with the URL's captures added, ready for field parsing.
    fn field_data(&self, request: &Request) -> Result<FieldData, LogicalError> {
        let mut raw = request.data.clone();
        if let Some(captures) = self.regex.captures(&request.path) {
            for name in self.regex.capture_names().flatten() {
                if let Some(value) = captures.name(name) {
                    raw.insert(name.to_string(), serde_json::Value::String(value.as_str().to_string()));
                }
            }
        }
        FieldData::parse(&self.fields, &raw, &request.operation)
    }

    fn handler_for(&self, operation: &Operation) -> Option<&PathOperation> {
        let find = |op: &Operation| self.operations.iter().find(|o| &o.operation == op);
        // A path that does not tell create from update handles both alike.
        find(operation).or_else(|| match operation {
            Operation::Create => find(&Operation::Update),
            _ => None,
        })
    }
}

/// Special paths, read once at mount time.
#[derive(Debug, Clone, Default)]
pub struct SpecialPaths {
    /// Paths that need `sudo`.
    pub root: Vec<String>,
    /// Paths callable without a token.
    pub unauthenticated: Vec<String>,
    /// Storage prefixes not replicated.
    pub local_storage: Vec<String>,
    /// Storage keys that are seal-wrapped.
    pub seal_wrap_storage: Vec<String>,
}

/// An engine: its paths and hooks.
#[derive(Clone, Default)]
pub struct Backend {
    /// Help for the mount as a whole.
    pub help: String,
    /// Paths, matched in order.
    pub paths: Vec<Path>,
    /// Special paths.
    pub special_paths: SpecialPaths,
    /// Run on every periodic call from the host.
    pub periodic: Option<PeriodicFunc>,
    /// Run after mount, unseal and reload.
    pub initialize: Option<InitializeFunc>,
    /// Run when a storage key changed elsewhere.
    pub invalidate: Option<InvalidateFunc>,
    /// Run when the mount is cleaned up.
    pub clean: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Largest request body accepted, in bytes; larger ones get a 400.
    /// Zero means no limit beyond the server's own.
    pub max_request_bytes: usize,
    /// The host's system view, asked whether this node is a standby
    /// before an operation that runs on the active node only.
    pub system: Option<crate::system::SystemView>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("paths", &self.paths).finish_non_exhaustive()
    }
}

impl Backend {
    fn route(&self, path: &str) -> Option<&Path> {
        self.paths.iter().find(|p| p.regex.is_match(path))
    }

    /// Handles one request.
    pub async fn handle_request(&self, request: Request) -> HandlerResult {
        match request.operation {
            Operation::Rollback => return self.run_periodic(request.storage.clone()).await,
            Operation::Help => return Ok(Some(self.help_for(&request.path))),
            _ => {}
        }
        let path = self.route(&request.path).ok_or(LogicalError::UnsupportedPath)?;
        let operation = path.handler_for(&request.operation).ok_or(LogicalError::UnsupportedOperation)?;
        if operation.on_active_node
            && let Some(system) = &self.system
            && system.is_read_standby().await
        {
            return Err(LogicalError::ReadOnly);
        }
        let handler = &operation.handler;
        if self.max_request_bytes > 0 && request.data_len > self.max_request_bytes {
            return Err(LogicalError::InvalidRequest(format!(
                "request body is {} bytes; this engine accepts at most {}",
                request.data_len, self.max_request_bytes
            )));
        }
        let data = path.field_data(&request)?;
        if request.operation == Operation::Create {
            data.require(&path.fields)?;
        }
        handler(request, data).await
    }

    /// `(check_found, exists)` for a create/update, as the host expects.
    pub async fn existence_check(&self, request: Request) -> Result<(bool, bool), LogicalError> {
        let path = self.route(&request.path).ok_or(LogicalError::UnsupportedPath)?;
        let Some(check) = &path.existence_check else {
            return Ok((false, false));
        };
        let data = path.field_data(&request)?;
        Ok((true, check(request, data).await?))
    }

    async fn run_periodic(&self, storage: Arc<dyn Storage>) -> HandlerResult {
        match &self.periodic {
            Some(periodic) => periodic(storage).await.map(|()| None),
            None => Err(LogicalError::UnsupportedOperation),
        }
    }

    fn help_for(&self, path: &str) -> Response {
        let text = match self.route(path) {
            Some(route) if !path.is_empty() => help::path_help(path, route),
            // The mount root, and the host's OpenAPI sweep, get the overview.
            _ => help::backend_help(&self.help, &self.paths),
        };
        let mut data = serde_json::Map::new();
        data.insert("help".into(), serde_json::Value::String(text));
        data.insert("see_also".into(), serde_json::Value::Array(Vec::new()));
        if path.is_empty() {
            data.insert("openapi".into(), openapi::document(&self.help, &self.paths));
        }
        Response::with_data(data)
    }
}

#[cfg(test)]
mod tests;
