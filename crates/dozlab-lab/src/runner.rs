//! Running a lab in a VM: "Check" (a page's `verify` with its timeout) and
//! `lab test`'s per-step run (background and foreground, verify must FAIL,
//! the `{{exec}}` blocks or the solution, verify must PASS), with the result
//! table.

use crate::markdown::{RenderOptions, render};
use crate::model::{Lab, Page};
use crate::remote::{Outcome, RemoteError, Shell, Vm};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Lines of output shown with a failed check.
pub const TAIL_LINES: usize = 10;
/// How long an `{{exec}}` block followed by `{{exec interrupt}}` may run
/// before it is taken as "still running, to be interrupted".
const SETTLE: Duration = Duration::from_secs(3);
/// Attempts of the verify after the step is done (1 s apart): effects such
/// as a container starting may take a moment.
const AFTER_ATTEMPTS: usize = 3;

/// Why a run could not proceed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The VM could not be used.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// A lab file could not be read.
    #[error("cannot read {0} of the lab")]
    Read(String, #[source] std::io::Error),
}

/// The result of a "Check".
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// verify exited 0 in time.
    pub passed: bool,
    /// Its exit status (None when timed out).
    pub status: Option<u32>,
    /// It ran out of time.
    pub timed_out: bool,
    /// The last lines of its output.
    pub output: String,
    /// How long it took, in seconds.
    pub seconds: f64,
    /// A sentence for the learner.
    pub message: String,
}

impl CheckResult {
    fn from_outcome(page: &Page, o: &Outcome) -> CheckResult {
        let message = if o.timed_out {
            format!(
                "the check did not finish within {}s (timed out): the `verify` script {} hangs or is too slow; make it return, or raise its timeout (dozlab.verifyTimeout)",
                page.verify_timeout.as_secs_f64(),
                page.verify.as_deref().unwrap_or("")
            )
        } else if o.success() {
            "passed".into()
        } else {
            format!(
                "not done yet (verify exited {})",
                o.status.map_or("?".into(), |s| s.to_string())
            )
        };
        CheckResult {
            passed: o.success(),
            status: o.status,
            timed_out: o.timed_out,
            output: o.last_lines(TAIL_LINES),
            seconds: o.elapsed.as_secs_f64(),
            message,
        }
    }
}

/// Runs `page`'s `verify` (None when it has none).
pub async fn check(vm: &Vm, lab: &Lab, page: &Page) -> Result<Option<CheckResult>, RunError> {
    let Some(rel) = &page.verify else {
        return Ok(None);
    };
    let text = lab.read(rel).map_err(|e| RunError::Read(rel.clone(), e))?;
    let o = vm.run_script(&text, page.verify_timeout).await?;
    Ok(Some(CheckResult::from_outcome(page, &o)))
}

/// Runs a page's start: `background` (to completion) and `foreground` (in
/// the shell) side by side. Returns a failure message, if any.
pub async fn start_page(
    vm: &Vm,
    shell: &mut Shell,
    lab: &Lab,
    page: &Page,
) -> Result<Option<String>, RunError> {
    let limit = lab.timeouts.background;
    let bg = async {
        match &page.background {
            Some(rel) => {
                let text = lab.read(rel).map_err(|e| RunError::Read(rel.clone(), e))?;
                Ok::<_, RunError>(Some((rel.clone(), vm.run_script(&text, limit).await?)))
            }
            None => Ok(None),
        }
    };
    let fg = async {
        match &page.foreground {
            Some(rel) => {
                let text = lab.read(rel).map_err(|e| RunError::Read(rel.clone(), e))?;
                Ok::<_, RunError>(Some((rel.clone(), shell.run(&text, false, limit).await?)))
            }
            None => Ok(None),
        }
    };
    let (bg, fg) = tokio::join!(bg, fg);
    if let Some((rel, o)) = bg? {
        if o.timed_out {
            return Ok(Some(format!(
                "background {rel} did not finish within {}s",
                limit.as_secs()
            )));
        }
        if !o.success() {
            return Ok(Some(format!(
                "background {rel} failed (exit {}):\n{}",
                o.status.unwrap_or(0),
                o.last_lines(TAIL_LINES)
            )));
        }
    }
    if let Some((rel, r)) = fg?
        && r.status.is_none()
    {
        return Ok(Some(format!(
            "foreground {rel} did not finish within {}s",
            limit.as_secs()
        )));
    }
    Ok(None)
}

/// One row of the `lab test` table.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// `intro`, `1 Title`, ...
    pub step: String,
    /// verify before the step was done: `fails` is right.
    pub before: String,
    /// verify after: `passes` is right.
    pub after: String,
    /// Wall time of the whole step, in seconds.
    pub seconds: f64,
    /// Why it failed (None when it passed).
    pub failure: Option<String>,
}

/// Runs step `page` as `lab test` does.
pub async fn test_step(
    vm: &Vm,
    shell: &mut Shell,
    lab: &Lab,
    page: &Page,
) -> Result<StepReport, RunError> {
    let t0 = Instant::now();
    let name = match page.title.is_empty() {
        true => page.id.to_string(),
        false => format!("{} {}", page.id, page.title),
    };
    let mut report = StepReport {
        step: name,
        before: "-".into(),
        after: "-".into(),
        seconds: 0.0,
        failure: None,
    };
    let fail = |mut r: StepReport, msg: String| {
        r.failure = Some(msg);
        r.seconds = t0.elapsed().as_secs_f64();
        Ok(r)
    };
    if let Some(msg) = start_page(vm, shell, lab, page).await? {
        return fail(report, msg);
    }
    if let Some(before) = check(vm, lab, page).await? {
        report.before = if before.timed_out {
            "TIMEOUT".into()
        } else if before.passed {
            "PASSES".into()
        } else {
            "fails".into()
        };
        if before.timed_out {
            return fail(
                report,
                format!("verify before the step: {}", before.message),
            );
        }
        if before.passed {
            return fail(
                report,
                "verify passes before the learner has done anything: the check always passes (a bug in the lab)".into(),
            );
        }
    }
    if let Some(msg) = do_step(vm, shell, lab, page).await? {
        return fail(report, msg);
    }
    if page.verify.is_some() {
        let mut last = None;
        for attempt in 0..AFTER_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let r = check(vm, lab, page).await?.expect("has verify");
            let stop = r.passed || r.timed_out;
            last = Some(r);
            if stop {
                break;
            }
        }
        let after = last.expect("one attempt");
        report.after = if after.passed {
            "passes".into()
        } else if after.timed_out {
            "TIMEOUT".into()
        } else {
            "FAILS".into()
        };
        if !after.passed {
            let out = if after.output.is_empty() {
                String::new()
            } else {
                format!(":\n{}", after.output)
            };
            return fail(
                report,
                format!("verify after the step: {}{out}", after.message),
            );
        }
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// Does the step: its solution script, else its `{{exec}}` blocks in order.
async fn do_step(
    vm: &Vm,
    shell: &mut Shell,
    lab: &Lab,
    page: &Page,
) -> Result<Option<String>, RunError> {
    let limit = lab.timeouts.exec;
    if let Some(rel) = &page.solution {
        let text = lab.read(rel).map_err(|e| RunError::Read(rel.clone(), e))?;
        let o = vm.run_script(&text, limit).await?;
        if o.timed_out {
            return Ok(Some(format!(
                "solution {rel} did not finish within {}s",
                limit.as_secs()
            )));
        }
        if !o.success() {
            return Ok(Some(format!(
                "solution {rel} failed (exit {}):\n{}",
                o.status.map_or("?".into(), |s| s.to_string()),
                o.last_lines(TAIL_LINES)
            )));
        }
        return Ok(None);
    }
    let Some(rel) = &page.text else {
        return Ok(None);
    };
    let md = lab.read(rel).map_err(|e| RunError::Read(rel.clone(), e))?;
    let rendered = render(
        &md,
        &RenderOptions {
            files_prefix: String::new(),
            file: rel.clone(),
        },
    );
    let blocks: Vec<_> = rendered.exec_blocks().cloned().collect();
    if blocks.is_empty() && page.verify.is_some() {
        return Ok(Some(format!(
            "{rel} has no {{{{exec}}}} block and the step has no solution script: nothing to do the step with"
        )));
    }
    for (i, b) in blocks.iter().enumerate() {
        let next_interrupts = blocks
            .get(i + 1)
            .is_some_and(|n| n.kind == crate::markdown::ActionKind::ExecInterrupt);
        let wait = if next_interrupts { SETTLE } else { limit };
        let interrupt = b.kind == crate::markdown::ActionKind::ExecInterrupt;
        let r = shell.run(&b.text, interrupt, wait).await?;
        if r.status.is_none() && !next_interrupts {
            return Ok(Some(format!(
                "{rel}:{}: the {{{{exec}}}} block did not finish within {}s:\n{}",
                b.line,
                limit.as_secs(),
                tail(&r.output)
            )));
        }
    }
    Ok(None)
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.trim_end().lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// The table `lab test` prints.
pub fn table(rows: &[StepReport]) -> String {
    let w = rows
        .iter()
        .map(|r| r.step.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut s = format!(
        "{:<w$}  {:<8}  {:<8}  {:>7}\n",
        "STEP", "BEFORE", "AFTER", "TIME"
    );
    for r in rows {
        let mark = if r.failure.is_some() { "  ✗" } else { "" };
        s.push_str(&format!(
            "{:<w$}  {:<8}  {:<8}  {:>6.1}s{mark}\n",
            r.step, r.before, r.after, r.seconds
        ));
    }
    for r in rows {
        if let Some(f) = &r.failure {
            s.push_str(&format!("\n{}: {}\n", r.step, f));
        }
    }
    s
}
