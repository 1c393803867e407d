//! `rankprune dashboard` in a real headless browser (Debian's chromium): a store holding a
//! finished study and one a search is still writing; each page's rendered DOM checked
//! against the store; a reload during the search shows more trials; 404s, escaping and
//! the JSON endpoints against `trials --json` and `export`.
//!
//! Without chromium the test prints a line and passes, unless RANKPRUNE_REQUIRE_CHROMIUM
//! is set (CI sets it, after installing chromium).

use crate::common::Killed;
use crate::search::{FAST_PROXY, SLOW_PROXY, Study, bin, export, run, spawn, study, text};
use rankprune::store::{TrialState, TrialStore};
use scraper::{Html, Selector};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LIVE_NAME: &str = "live <b>&</b>";

fn chromium() -> Option<String> {
    let exe = std::env::var("RANKPRUNE_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = Command::new(&exe)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(exe);
    }
    assert!(
        std::env::var_os("RANKPRUNE_REQUIRE_CHROMIUM").is_none(),
        "RANKPRUNE_REQUIRE_CHROMIUM is set but {exe} does not run"
    );
    println!("skipping the dashboard browser test: no {exe} (apt-get install chromium)");
    None
}

/// The DOM after the page's scripts ran, as headless chromium serialises it.
fn dom(exe: &str, profile: &Path, url: &str) -> Html {
    let o = Command::new(exe)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(o.status.success(), "chromium on {url}: {}", text(&o));
    Html::parse_document(&String::from_utf8_lossy(&o.stdout))
}

fn select<'a>(doc: &'a Html, css: &str) -> Vec<scraper::ElementRef<'a>> {
    doc.select(&Selector::parse(css).unwrap()).collect()
}

fn text_of(doc: &Html, css: &str) -> String {
    let found = select(doc, css);
    assert_eq!(found.len(), 1, "one {css} in\n{}", doc.html());
    found[0].text().collect::<String>().trim().to_string()
}

/// Starts the dashboard on a free port; returns it and its base URL.
pub(crate) fn start_dashboard(db: &Path) -> (Killed, String) {
    let mut child = bin()
        .args([
            "dashboard",
            "--db",
            db.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .trim_end_matches('/')
        .to_string();
    (Killed(child), url)
}

pub(crate) fn get(url: &str) -> (u16, String) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut r = agent.get(url).call().unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// The finished study ("tiny", 3 trials, 2 re-trained) and, in the same store, a budget
/// for a long study that the test starts.
fn stores() -> Study {
    let s = study(3, FAST_PROXY, "[final]\ntop_k = 2\nepochs = 1\nseeds = 2");
    let o = run(&["search", s.budget().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let budget = std::fs::read_to_string(s.budget()).unwrap();
    let live = budget
        .replace("name = \"tiny\"", &format!("name = {LIVE_NAME:?}"))
        .replace("max_trials = 3", "max_trials = 500")
        .replace(FAST_PROXY, SLOW_PROXY)
        .replace("top_k = 2", "top_k = 0");
    std::fs::write(s.path("live.toml"), live).unwrap();
    s
}

fn ended(store: &TrialStore, study: i64) -> usize {
    store
        .trials(study)
        .unwrap()
        .iter()
        .filter(|t| t.state != TrialState::Running && t.state != TrialState::Queued)
        .count()
}

#[test]
fn dashboard_pages_in_headless_chromium_follow_a_running_search() {
    let Some(exe) = chromium() else { return };
    let s = stores();
    let db = s.path("runs/study.sqlite");
    let mut search = Killed(spawn(&s.path("live.toml")));
    let t0 = Instant::now();
    while TrialStore::open(&db).map_or(0, |st| ended(&st, 2)) < 1 {
        assert!(
            search.0.try_wait().unwrap().is_none(),
            "the live search ended early"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no trial of the live study ended"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_dash, url) = start_dashboard(&db);
    let profile = tempfile::tempdir().unwrap();
    let page = |path: &str| dom(&exe, profile.path(), &format!("{url}{path}"));
    let store = TrialStore::open(&db).unwrap();

    // Studies: both, with their states; the live one's name escaped, not markup.
    let home = page("/");
    let rows = select(&home, "#studies tr[data-study]");
    assert_eq!(rows.len(), 2, "{}", home.html());
    let state = |i: usize| {
        rows[i]
            .select(&Selector::parse("td").unwrap())
            .nth(1)
            .unwrap()
    };
    assert_eq!(state(0).text().collect::<String>(), "finished");
    assert_eq!(state(1).text().collect::<String>(), "running");
    assert!(rows[1].text().collect::<String>().contains(LIVE_NAME));
    assert!(
        select(&home, "#studies b").is_empty(),
        "the name was not escaped"
    );

    // The finished study: count, best trial (best validation after re-training), and one
    // circle per completed trial in the scatter.
    let trials = store.trials(1).unwrap();
    let done = page("/study/1");
    assert_eq!(text_of(&done, "#trial-count"), trials.len().to_string());
    assert_eq!(select(&done, "#trials tr[data-number]").len(), trials.len());
    let (best, val) = trials
        .iter()
        .filter_map(|t| Some((t.number, store.final_result(t.id).unwrap()?.val_top1?)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("the final stage re-trained trials");
    assert_eq!(text_of(&done, "#best-trial"), best.to_string());
    assert_eq!(text_of(&done, "#best-acc"), format!("{:.2}%", 100.0 * val));
    let complete = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .count();
    assert!(complete >= 2, "{trials:?}");
    assert_eq!(select(&done, "#scatter svg circle").len(), complete);
    assert_eq!(
        select(&done, "#agreement svg circle").len(),
        2,
        "two re-trained trials"
    );
    assert_eq!(select(&done, "#layers").len(), 1);

    // The verdict: the stored one's words, each re-trained subject (two finalists and the
    // control), and a download that is `export --control`'s JSON; its word on the
    // studies page.
    let row = store.study_row(1).unwrap().unwrap();
    let verdict = json(row.verdict.as_deref().expect("a stored verdict"));
    assert_eq!(
        text_of(&done, "#verdict-text"),
        verdict["text"].as_str().unwrap()
    );
    assert_eq!(select(&done, "#verdict-subjects tr").len(), 1 + 3);
    assert!(
        text_of(&done, "#verdict-val").contains("points, 95% ["),
        "{}",
        done.html()
    );
    let word = if verdict["better"] == true {
        "better"
    } else {
        "not shown"
    };
    let verdict_cell = rows[0]
        .select(&Selector::parse("td.verdict").unwrap())
        .next()
        .unwrap();
    assert_eq!(verdict_cell.text().collect::<String>().trim(), word);
    let control = export(
        &db,
        &["--study", "tiny", "--control"],
        &s.path("control.json"),
    );
    assert_eq!(
        json(&get(&format!("{url}/api/studies/1/control/export")).1),
        control
    );
    assert_eq!(control["provenance"]["verdict"], verdict);

    // A trial page: its state, and a download that is `export --trial`'s JSON.
    let trial = page(&format!("/study/1/trial/{best}"));
    assert_eq!(text_of(&trial, "#trial-state"), "complete");
    let href = select(&trial, "#download")[0]
        .attr("href")
        .unwrap()
        .to_string();
    let exported = export(
        &db,
        &["--study", "tiny", "--trial", &best.to_string()],
        &s.path("exported.json"),
    );
    assert_eq!(json(&get(&format!("{url}{href}")).1), exported);
    assert_eq!(
        json(&get(&format!("{url}/api/studies/1/export")).1),
        exported,
        "best"
    );
    let o = run(&[
        "trials",
        "--db",
        db.to_str().unwrap(),
        "--study",
        "tiny",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let listed = json(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(json(&get(&format!("{url}/api/studies/1/trials")).1), listed);

    // The live study: the page refreshes itself from its fragment (the finished one does
    // not), and a reload later shows more trials.
    let first = page("/study/2");
    let before: usize = text_of(&first, "#trial-count").parse().unwrap();
    assert!(text_of(&first, "h1").contains(LIVE_NAME));
    let src = select(&first, "#live")[0]
        .attr("data-src")
        .expect("a live page refreshes");
    let (status, fragment) = get(&format!("{url}{src}"));
    assert_eq!(status, 200);
    let fragment = Html::parse_fragment(&fragment);
    assert!(text_of(&fragment, "#trial-count").parse::<usize>().unwrap() >= before);
    assert!(select(&done, "#live")[0].attr("data-src").is_none());
    let t0 = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let now: usize = text_of(&page("/study/2"), "#trial-count").parse().unwrap();
        if now > before {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "still {now} trials after two minutes"
        );
    }

    // `rankprune studies` lists what /api/studies gives (the finished study exactly; the
    // running one's wall time moves).
    let o = run(&["studies", "--db", db.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let listed = json(&String::from_utf8_lossy(&o.stdout));
    let served = json(&get(&format!("{url}/api/studies")).1);
    assert_eq!(listed[0], served[0]);
    assert_eq!(listed[1]["state"], "running");
    assert_eq!(listed[0]["best_trial"], best);
    let o = run(&["studies", "--db", db.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("tiny") && table.contains("finished"),
        "{table}"
    );

    // Wrong ids: 404 pages, and the server still answers.
    for path in [
        "/study/99",
        "/study/1/trial/999",
        "/api/studies/99/trials",
        "/nowhere",
    ] {
        let (status, body) = get(&format!("{url}{path}"));
        assert_eq!(status, 404, "{path}: {body}");
    }
    assert_eq!(get(&format!("{url}/api/studies")).0, 200);
    let _ = Command::new("kill")
        .args(["-TERM", &search.0.id().to_string()])
        .status();
    search.0.wait().unwrap();
}

#[test]
fn a_missing_store_or_a_bad_listen_address_is_bad_input() {
    let o = run(&["dashboard", "--db", "/nonexistent/x.sqlite"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no such trial store"), "{}", text(&o));
    let o = run(&["dashboard", "--db", "x.sqlite", "--listen", "localhost"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}
