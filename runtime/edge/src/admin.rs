//! The admin API for message functions, on the edge's listener. Every route needs an
//! admin key (`[[admin_keys]]`, as `Authorization: Bearer app.keyid:secret`).
//!
//! ```text
//! GET    /v1/admin/functions                 the functions in force here, with stats
//! POST   /v1/admin/functions/{name}          deploy: {"binding": {...}, "wasm_base64": "..."}
//! POST   /v1/admin/functions/{name}/rollback {"to": N} (default: the version before the current one)
//! DELETE /v1/admin/functions/{name}          remove
//! ```
//!
//! A deploy is checked here first (the component must compile against this edge's
//! world, the binding must be valid), then written to the log's `$functions` channel;
//! the answer comes once this edge has applied it, with the version and how long the
//! apply took. Every other edge applies the same record in the same order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use tern_config::{FunctionName, RawBindingSpec};
use tern_link::{Position, PublishMessage};
use tern_protocol::{ErrorCode, ErrorInfo};
use tokio::sync::oneshot;

use crate::convert::to_client_position;
use crate::functions::{APPLY_TIMEOUT, BindingRecord, CHANNEL, FunctionInfo, FunctionRecord};
use crate::http::{
    HttpResponse, error_response, json, method_not_allowed, presented_key, read_body,
};
use crate::link::{PublishJob, ReplyTo};
use crate::server::Shared;

/// Largest deploy body: a component of a few MiB, base64-encoded.
const MAX_DEPLOY_BODY: usize = 16 << 20;
/// Time allowed for a deploy body to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// A deploy request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployRequest {
    binding: RawBindingSpec,
    wasm_base64: String,
}

/// A rollback request.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    to: Option<u32>,
}

/// The answer to a deploy, rollback or remove.
#[derive(Debug, Serialize)]
struct Applied {
    name: String,
    /// The version now in force (absent after a remove).
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
    /// Where the record sits in `$functions`.
    position: tern_protocol::Position,
    /// From the record being stored to it being in force on this edge.
    applied_ms: f64,
}

#[derive(Debug, Serialize)]
struct List {
    edge: String,
    functions: Vec<FunctionInfo>,
}

pub(crate) async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
    rest: Vec<String>,
) -> HttpResponse {
    if let Err(error) = authorize(&request, &shared) {
        return error_response(error);
    }
    let method = request.method().clone();
    let rest: Vec<&str> = rest
        .iter()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    let result = match (rest.as_slice(), &method) {
        ([], &Method::GET) => Ok(json(
            StatusCode::OK,
            &List {
                edge: shared.config.name.clone(),
                functions: shared.functions.list(),
            },
        )),
        ([], _) => return method_not_allowed("GET"),
        ([name], &Method::POST) => deploy(request, &shared, name).await,
        ([name], &Method::DELETE) => remove(&shared, name).await,
        ([_], _) => return method_not_allowed("POST, DELETE"),
        ([name, "rollback"], &Method::POST) => rollback(request, &shared, name).await,
        ([_, "rollback"], _) => return method_not_allowed("POST"),
        _ => Err(ErrorInfo::new(ErrorCode::NotFound, "no such admin route")),
    };
    result.unwrap_or_else(error_response)
}

fn authorize(request: &Request<Incoming>, shared: &Shared) -> Result<(), ErrorInfo> {
    match presented_key(request)? {
        None => Err(ErrorInfo::new(
            ErrorCode::Unauthorized,
            "the admin API needs an admin key: Authorization: Bearer app.keyid:secret",
        )),
        Some(key) if shared.config.authenticate_admin(&key) => Ok(()),
        Some(_) => Err(ErrorInfo::new(
            ErrorCode::InvalidCredentials,
            "not an admin key of this edge ([[admin_keys]])",
        )),
    }
}

fn invalid(message: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new(ErrorCode::InvalidValue, message)
}

fn function_name(name: &str) -> Result<FunctionName, ErrorInfo> {
    FunctionName::parse(name).map_err(|e| invalid(format!("function name: {e}")))
}

async fn deploy(
    request: Request<Incoming>,
    shared: &Arc<Shared>,
    name: &str,
) -> Result<HttpResponse, ErrorInfo> {
    let name = function_name(name)?;
    let body = read_body(request, MAX_DEPLOY_BODY, BODY_TIMEOUT).await?;
    let deploy: DeployRequest = serde_json::from_slice(&body)
        .map_err(|e| ErrorInfo::new(ErrorCode::Malformed, format!("deploy body: {e}")))?;
    let wasm = base64::engine::general_purpose::STANDARD
        .decode(deploy.wasm_base64.trim())
        .map_err(|e| invalid(format!("wasm_base64: {e}")))?;
    let spec = deploy
        .binding
        .compile("binding", shared.config.functions.max_memory_bytes)
        .map_err(|e| invalid(e.to_string()))?;
    // Refuse what no edge could run before it reaches the log.
    let functions = Arc::clone(&shared.functions);
    let (check_name, check_wasm, check_spec) = (name.clone(), wasm.clone(), spec.clone());
    tokio::task::spawn_blocking(move || functions.check(&check_name, &check_wasm, &check_spec))
        .await
        .map_err(|e| ErrorInfo::new(ErrorCode::Internal, format!("checking the component: {e}")))?
        .map_err(|e| ErrorInfo::new(ErrorCode::InvalidValue, format!("component refused: {e}")))?;
    let record = FunctionRecord::Deploy {
        name: name.to_string(),
        binding: BindingRecord::from_spec(&spec),
        wasm: Bytes::from(wasm),
        rollback_of: None,
    };
    write_and_wait(shared, &name, record, true).await
}

async fn rollback(
    request: Request<Incoming>,
    shared: &Arc<Shared>,
    name: &str,
) -> Result<HttpResponse, ErrorInfo> {
    let name = function_name(name)?;
    let body = read_body(request, 4096, BODY_TIMEOUT).await?;
    let ask: RollbackRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ErrorInfo::new(ErrorCode::Malformed, format!("rollback body: {e}")))?
    };
    let versions = shared.functions.versions(&name);
    let current = shared
        .functions
        .list()
        .into_iter()
        .find(|f| f.name == name.as_str())
        .map(|f| f.version);
    let target = match ask.to {
        Some(to) => versions.iter().find(|v| v.version == to),
        None => versions
            .iter()
            .rev()
            .find(|v| Some(v.version) < current && current.is_some()),
    }
    .ok_or_else(|| {
        let known: Vec<String> = versions.iter().map(|v| v.version.to_string()).collect();
        ErrorInfo::new(
            ErrorCode::NotFound,
            format!(
                "{name} has no version to roll back to (recorded versions: [{}], in force: {})",
                known.join(", "),
                current.map_or("none".to_owned(), |v| v.to_string())
            ),
        )
    })?;
    let record = FunctionRecord::Deploy {
        name: name.to_string(),
        binding: target.binding.clone(),
        wasm: target.wasm.clone(),
        rollback_of: Some(target.version),
    };
    write_and_wait(shared, &name, record, true).await
}

async fn remove(shared: &Arc<Shared>, name: &str) -> Result<HttpResponse, ErrorInfo> {
    let name = function_name(name)?;
    if !shared
        .functions
        .list()
        .iter()
        .any(|f| f.name == name.as_str())
    {
        return Err(ErrorInfo::new(
            ErrorCode::NotFound,
            format!("no function {name} here"),
        ));
    }
    let record = FunctionRecord::Remove {
        name: name.to_string(),
    };
    write_and_wait(shared, &name, record, false).await
}

/// Stores `record` in `$functions` and waits until this edge applied it.
async fn write_and_wait(
    shared: &Arc<Shared>,
    name: &FunctionName,
    record: FunctionRecord,
    deploys: bool,
) -> Result<HttpResponse, ErrorInfo> {
    let mut applied = shared.functions.applied();
    let key = format!("admin:{}:{}", name, crate::ws::random_hex(16));
    let (tx, rx) = oneshot::channel();
    // Straight to the link: `$functions` has no functions of its own.
    shared.link.publish(
        PublishJob {
            messages: vec![PublishMessage {
                channel: CHANNEL.to_owned(),
                idempotency_key: Bytes::from(key),
                headers: Vec::new(),
                payload: record.encode(),
            }],
            reply: ReplyTo::Oneshot(tx),
        },
        &shared.metrics,
    );
    let results = rx
        .await
        .map_err(|_| ErrorInfo::new(ErrorCode::ShuttingDown, "the edge is shutting down"))??;
    let stored_at = Instant::now();
    let position = results
        .first()
        .map(|r| r.position)
        .ok_or_else(|| ErrorInfo::new(ErrorCode::Internal, "no result for the record"))?;
    let link_position = crate::convert::to_link_cursor(position)
        .ok()
        .flatten()
        .ok_or_else(|| ErrorInfo::new(ErrorCode::Internal, "the record has no position"))?;
    let reached = tokio::time::timeout(
        APPLY_TIMEOUT,
        applied.wait_for(|a| {
            a.position
                .is_some_and(|p: Position| p.serial >= link_position.serial)
        }),
    )
    .await;
    if !matches!(reached, Ok(Ok(_))) {
        return Err(ErrorInfo::new(
            ErrorCode::LogTimeout,
            format!(
                "the record is stored at {position} but this edge has not applied it within {} s",
                APPLY_TIMEOUT.as_secs()
            ),
        ));
    }
    let applied_ms = stored_at.elapsed().as_secs_f64() * 1000.0;
    let info = shared
        .functions
        .list()
        .into_iter()
        .find(|f| f.name == name.as_str());
    if let Some(error) = info.as_ref().and_then(|f| f.error.clone()) {
        return Err(ErrorInfo::new(
            ErrorCode::InvalidValue,
            format!("stored at {position} but not applied here: {error}"),
        ));
    }
    let version = if deploys {
        shared
            .functions
            .versions(name)
            .iter()
            .find(|v| v.position == link_position)
            .map(|v| v.version)
    } else {
        None
    };
    Ok(json(
        StatusCode::CREATED,
        &Applied {
            name: name.to_string(),
            version,
            position: to_client_position(link_position),
            applied_ms,
        },
    ))
}
