//! What each channel request does.

use super::wire::{self, Added, Answered, Done, Followed, Info, Reported, Request, Stored, Waited};
use super::{Context, confine, relay};
use crate::artifacts::{self, TransferError};
use drover_api::{AddStep, ApiError, ErrorCode, ScalarBatch};
use drover_protocol::message::ArtifactRef;

/// The answer line to one request line.
pub async fn answer(context: &Context, line: &[u8]) -> String {
    let request = serde_json::from_slice::<Request>(line).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "cannot read the request: {e}; send one JSON object per line whose \"op\" is info, add_step, wait, put, get, scalars, artifact, run or callback"
            ),
        )
    });
    match request {
        Ok(request) => match run(context, request).await {
            Ok(line) => line,
            Err(e) => wire::failure(&e),
        },
        Err(e) => wire::failure(&e),
    }
}

async fn run(context: &Context, request: Request) -> Result<String, ApiError> {
    match request {
        Request::Info => Ok(wire::ok(Info {
            run_id: &context.attempt.run_id,
            step: &context.attempt.step,
            attempt: context.attempt.attempt,
            controller_url: &context.base,
        })),
        Request::AddStep { call, step } => {
            let request = AddStep {
                caller: context.attempt.step.clone(),
                attempt: context.attempt.attempt,
                call,
                step: *step,
            };
            let added = relay::add_step(context, &request).await?;
            Ok(wire::ok(Added {
                step: added.step,
                existing: added.existing,
            }))
        }
        Request::Wait { step } => {
            context.slot.release();
            let waited = relay::wait(context, &step).await;
            context.slot.retake().await;
            Ok(wire::ok(Waited {
                view: Box::new(waited?),
            }))
        }
        Request::Put { path } => {
            let file = confine::existing_file(&context.workdir, &path)?;
            let what = format!("storing {path:?}");
            let artifact = artifacts::retrying(&what, || artifacts::upload(&context.route, &file))
                .await
                .map_err(|e| transfer_error(&what, e))?;
            Ok(wire::ok(Stored { artifact }))
        }
        Request::Artifact { name, path } => {
            if context.declared.contains(&name) {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "artifact \"{name}\" has the name of one of the step's return values (function_return); upload it under another name"
                    ),
                ));
            }
            let file = confine::existing_file(&context.workdir, &path)?;
            let what = format!("storing artifact \"{name}\"");
            let artifact = artifacts::retrying(&what, || artifacts::upload(&context.route, &file))
                .await
                .map_err(|e| transfer_error(&what, e))?;
            context
                .artifacts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(name, artifact.clone());
            Ok(wire::ok(Stored { artifact }))
        }
        Request::Get { artifact, dest } => {
            let dest_path = confine::destination(&context.workdir, &dest)?;
            fetch(context, &artifact, &dest_path, &dest).await?;
            Ok(wire::ok(Done {}))
        }
        Request::Scalars { points } => {
            let batch = ScalarBatch {
                attempt: context.attempt.attempt,
                points,
            };
            let stored = relay::scalars(context, &batch).await?;
            Ok(wire::ok(Reported {
                stored: stored.stored,
            }))
        }
        Request::Run {} => {
            let view = relay::run(context).await?;
            Ok(wire::ok(Followed {
                view: Box::new(view),
            }))
        }
        Request::Callback { step, proceed } => {
            let answered = relay::callback(context, &step, proceed).await?;
            Ok(wire::ok(Answered {
                status: answered.status,
            }))
        }
    }
}

/// Downloads next to `dest` and renames into place once the digest checked out, so `dest`
/// never holds a partial or corrupt file.
async fn fetch(
    context: &Context,
    artifact: &ArtifactRef,
    dest: &std::path::Path,
    requested: &str,
) -> Result<(), ApiError> {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let part = dest.with_file_name(format!(".{name}.{}.part", uuid::Uuid::new_v4().simple()));
    let what = format!("blob {} ({})", artifact.digest, artifact.file_name);
    let fetched = artifacts::retrying(&what, || {
        artifacts::download_blob(&context.route, &artifact.digest, &what, &part)
    })
    .await;
    let placed = match fetched {
        Ok(()) => std::fs::rename(&part, dest).map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("cannot move {what} to {requested:?}: {e}"),
            )
        }),
        Err(e) => Err(transfer_error(&format!("fetching {what}"), e)),
    };
    if placed.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    placed
}

/// A transfer failure as the step sees it; the controller's own error passes through.
fn transfer_error(what: &str, e: TransferError) -> ApiError {
    let code = match &e {
        TransferError::Status { body, .. } => {
            if let Ok(api) = serde_json::from_str::<ApiError>(body) {
                return ApiError::new(api.code, format!("{what}: {}", api.message));
            }
            ErrorCode::Internal
        }
        TransferError::Http { .. } | TransferError::Inactive { .. } => ErrorCode::Unavailable,
        TransferError::Missing { .. } => ErrorCode::NotFound,
        TransferError::Io { .. } => ErrorCode::BadRequest,
        TransferError::Corrupt { .. } | TransferError::Store(_) => ErrorCode::Internal,
    };
    ApiError::new(code, format!("{what}: {e}"))
}
