//! `rankprune dashboard`: a read-only web view of a trial store (axum). Every request
//! opens the store read-only, so SQLite refuses any write, and a search can go on writing
//! the same file meanwhile (WAL readers never block it).

pub mod charts;
pub mod pages;
pub mod view;

use crate::search::export::{export_config, pick_study, trials_json};
use crate::store::TrialStore;
use crate::{Error, Result};
use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::Markup;
use pages::SortKey;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct App {
    db: PathBuf,
}

/// What a handler answers: a page, a fragment or JSON, or a 404 page.
enum Answer {
    Html(Markup),
    Json(serde_json::Value),
    NotFound(String),
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self {
            Answer::Html(m) => m.into_response(),
            Answer::Json(v) => axum::Json(v).into_response(),
            Answer::NotFound(what) => {
                (StatusCode::NOT_FOUND, pages::not_found(&what)).into_response()
            }
        }
    }
}

/// A failure to read the store: a 500 page that says why.
struct Failed(Error);

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        tracing::warn!("dashboard request failed: {}", self.0);
        let body = maud::html! { h1 { "Error" } p { (self.0.to_string()) } };
        (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
    }
}

type Reply = std::result::Result<Answer, Failed>;

/// Runs `f` on a fresh read-only connection, off the async threads.
async fn with_store(
    app: &App,
    f: impl FnOnce(&TrialStore) -> Result<Answer> + Send + 'static,
) -> Reply {
    let db = app.db.clone();
    tokio::task::spawn_blocking(move || f(&TrialStore::open_read_only(&db)?))
        .await
        .map_err(|e| Failed(Error::Failure(format!("request task: {e}"))))?
        .map_err(Failed)
}

fn no_study(id: i64) -> Answer {
    Answer::NotFound(format!("There is no study with id {id} in this store."))
}

#[derive(serde::Deserialize, Default)]
struct Sort {
    #[serde(default)]
    sort: SortKey,
    #[serde(default)]
    desc: bool,
}

async fn studies(State(app): State<Arc<App>>) -> Reply {
    let name = app.db.display().to_string();
    with_store(&app, move |s| {
        Ok(Answer::Html(pages::studies(&name, &view::studies(s)?)))
    })
    .await
}

async fn studies_live(State(app): State<Arc<App>>) -> Reply {
    with_store(&app, |s| {
        Ok(Answer::Html(pages::studies_table(&view::studies(s)?)))
    })
    .await
}

async fn study(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<i64>,
    Query(q): Query<Sort>,
) -> Reply {
    study_page(app, id, q, false).await
}

async fn study_live(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<i64>,
    Query(q): Query<Sort>,
) -> Reply {
    study_page(app, id, q, true).await
}

async fn study_page(app: Arc<App>, id: i64, q: Sort, fragment: bool) -> Reply {
    with_store(&app, move |s| {
        let Some(row) = view::find_study(s, id)? else {
            return Ok(no_study(id));
        };
        let v = view::study(s, row)?;
        Ok(Answer::Html(if fragment {
            pages::study_body(&v, q.sort, q.desc)
        } else {
            pages::study(&v, q.sort, q.desc)
        }))
    })
    .await
}

async fn trial(State(app): State<Arc<App>>, UrlPath((id, number)): UrlPath<(i64, i64)>) -> Reply {
    with_store(&app, move |s| {
        let Some(row) = view::find_study(s, id)? else {
            return Ok(no_study(id));
        };
        let Some(t) = s.trials(id)?.into_iter().find(|t| t.number == number) else {
            return Ok(Answer::NotFound(format!(
                "Study {} has no trial {number}.",
                row.name
            )));
        };
        let base = crate::search::export::study_base(&row).map(|(c, _)| c);
        let t = view::trial_row(s, t)?;
        Ok(Answer::Html(pages::trial(&row, &t, base.as_ref())))
    })
    .await
}

async fn api_studies(State(app): State<Arc<App>>) -> Reply {
    with_store(&app, |s| {
        let list: Vec<_> = view::studies(s)?.iter().map(|v| v.to_json()).collect();
        Ok(Answer::Json(serde_json::Value::Array(list)))
    })
    .await
}

async fn api_trials(State(app): State<Arc<App>>, UrlPath(id): UrlPath<i64>) -> Reply {
    with_store(&app, move |s| {
        if view::find_study(s, id)?.is_none() {
            return Ok(no_study(id));
        }
        Ok(Answer::Json(trials_json(s, &s.trials(id)?)?))
    })
    .await
}

/// The exported config of trial `number`, or of the best trial when None (what
/// `rankprune export` writes).
async fn export(app: Arc<App>, id: i64, number: Option<i64>) -> Reply {
    let db = app.db.display().to_string();
    with_store(&app, move |s| {
        let Some(row) = view::find_study(s, id)? else {
            return Ok(no_study(id));
        };
        let row = pick_study(s, &db, Some(&row.name))?;
        let trial = match number {
            Some(n) => s.trials(id)?.into_iter().find(|t| t.number == n),
            None => crate::search::export::best_trial(s, &row)?.map(|b| b.0),
        };
        let Some(trial) = trial else {
            return Ok(Answer::NotFound(match number {
                Some(n) => format!("Study {} has no trial {n}.", row.name),
                None => format!(
                    "Study {} has no completed trial that meets its target.",
                    row.name
                ),
            }));
        };
        let config = export_config(s, &row, &trial, &db)?;
        let json = serde_json::to_value(&config).expect("a config serializes");
        Ok(Answer::Json(json))
    })
    .await
}

/// The control's config (what `rankprune export --control` writes).
async fn api_export_control(State(app): State<Arc<App>>, UrlPath(id): UrlPath<i64>) -> Reply {
    let db = app.db.display().to_string();
    with_store(&app, move |s| {
        let Some(row) = view::find_study(s, id)? else {
            return Ok(no_study(id));
        };
        if row.control.is_none() {
            return Ok(Answer::NotFound(format!(
                "Study {} has no control config yet.",
                row.name
            )));
        }
        let config = crate::search::export::export_control(s, &row, &db)?;
        Ok(Answer::Json(
            serde_json::to_value(&config).expect("a config serializes"),
        ))
    })
    .await
}

async fn api_export_best(State(app): State<Arc<App>>, UrlPath(id): UrlPath<i64>) -> Reply {
    export(app, id, None).await
}

async fn api_export_trial(
    State(app): State<Arc<App>>,
    UrlPath((id, number)): UrlPath<(i64, i64)>,
) -> Reply {
    export(app, id, Some(number)).await
}

async fn fallback(uri: axum::http::Uri) -> impl IntoResponse {
    Answer::NotFound(format!("No page at {}.", uri.path()))
}

/// The dashboard's routes on the store at `db`.
pub fn router(db: &Path) -> Router {
    let app = Arc::new(App {
        db: db.to_path_buf(),
    });
    Router::new()
        .route("/", get(studies))
        .route("/live", get(studies_live))
        .route("/study/{id}", get(study))
        .route("/study/{id}/live", get(study_live))
        .route("/study/{id}/trial/{number}", get(trial))
        .route("/api/studies", get(api_studies))
        .route("/api/studies/{id}/trials", get(api_trials))
        .route("/api/studies/{id}/export", get(api_export_best))
        .route("/api/studies/{id}/control/export", get(api_export_control))
        .route(
            "/api/studies/{id}/trials/{number}/export",
            get(api_export_trial),
        )
        .fallback(fallback)
        .layer(axum::middleware::map_response(no_store))
        .with_state(app)
}

/// Pages change as the search goes on: browsers must not cache them.
async fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

/// Serves the dashboard of `db` on `listen` until SIGINT or SIGTERM. `on_bound` gets the
/// address actually bound (port 0 picks a free one).
pub fn serve(db: &Path, listen: SocketAddr, on_bound: impl FnOnce(SocketAddr)) -> Result<()> {
    // Refuse a missing or unreadable store before listening.
    if !db.exists() && !crate::store::is_postgres(db) {
        return Err(Error::BadInput(format!(
            "{}: no such trial store",
            db.display()
        )));
    }
    TrialStore::open_read_only(db)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Failure(format!("tokio runtime: {e}")))?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| Error::BadInput(format!("--listen {listen}: {e}")))?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::Failure(format!("--listen {listen}: {e}")))?;
        on_bound(bound);
        axum::serve(listener, router(db))
            .with_graceful_shutdown(stopped())
            .await
            .map_err(|e| Error::Failure(format!("dashboard server: {e}")))
    })
}

async fn stopped() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
