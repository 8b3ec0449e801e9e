//! What a lab found: the outcome of every check, capture and command, stage by stage, and
//! how `uvlan lab` prints it (the reachability matrices, expected against observed).

use super::{CaptureExpect, CaptureSpec, CheckSpec, Expect, UvlanCaptureSpec};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

/// The outcome of one ping check.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// The check.
    pub check: CheckSpec,
    /// The address pinged.
    pub addr: IpAddr,
    /// Whether it answered.
    pub reached: bool,
}

impl CheckResult {
    /// Observed equals expected.
    pub fn ok(&self) -> bool {
        self.reached == (self.check.expect == Expect::Reach)
    }
}

/// The outcome of a capture.
#[derive(Debug, Clone)]
pub struct CaptureResult {
    /// The capture (filter with placeholders expanded).
    pub capture: CaptureSpec,
    /// Frames matching the filter, when the capture could be read.
    pub frames: Option<usize>,
    /// Why the capture could not be evaluated.
    pub error: Option<String>,
}

impl CaptureResult {
    /// Observed equals expected.
    pub fn ok(&self) -> bool {
        match (self.frames, self.capture.expect) {
            (Some(n), CaptureExpect::Seen) => n > 0,
            (Some(n), CaptureExpect::None) => n == 0,
            (None, _) => false,
        }
    }
}

/// The outcome of a uvlan capture (pcapng with the engine's verdicts).
#[derive(Debug, Clone)]
pub struct UvlanCaptureResult {
    /// The capture (expectations with placeholders expanded).
    pub capture: UvlanCaptureSpec,
    /// The pcapng file.
    pub file: PathBuf,
    /// Whether the file stays after the lab (`uvlan lab --out DIR`).
    pub kept: bool,
    /// Records in the file, when it could be read.
    pub records: Option<u64>,
    /// Of those, frames that went nowhere (verdict drop, or not delivered).
    pub drops: u64,
    /// Records lost because the lab read too slowly (from the statistics blocks).
    pub lost: u64,
    /// Expectations not met (empty when as expected).
    pub problems: Vec<String>,
    /// Why the capture could not be taken or read.
    pub error: Option<String>,
}

impl UvlanCaptureResult {
    /// Recorded, read back, and as expected.
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.problems.is_empty()
    }
}

/// The outcome of a command that is a check.
#[derive(Debug, Clone)]
pub struct ActionResult {
    /// The command, as written.
    pub what: String,
    /// What did not match (empty when as expected).
    pub problems: Vec<String>,
}

impl ActionResult {
    /// Observed equals expected.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The outcome of one stage.
#[derive(Debug, Clone)]
pub struct StageReport {
    /// The stage's title.
    pub title: String,
    /// Ping checks.
    pub results: Vec<CheckResult>,
    /// Captures.
    pub captures: Vec<CaptureResult>,
    /// uvlan captures (recordings and checks).
    pub uvlan_captures: Vec<UvlanCaptureResult>,
    /// Commands that are checks.
    pub actions: Vec<ActionResult>,
}

impl StageReport {
    /// Everything in the stage as expected.
    pub fn passed(&self) -> bool {
        self.results.iter().all(CheckResult::ok)
            && self.captures.iter().all(CaptureResult::ok)
            && self.uvlan_captures.iter().all(UvlanCaptureResult::ok)
            && self.actions.iter().all(ActionResult::ok)
    }

    fn checked(&self) -> usize {
        self.results.len()
            + self.captures.len()
            + self.actions.len()
            + self
                .uvlan_captures
                .iter()
                .filter(|c| c.capture.is_check())
                .count()
    }

    /// The reachability matrix (expected against observed), then captures and command checks.
    pub fn matrix(&self) -> String {
        let mut s = render_matrix(&self.results);
        for c in &self.captures {
            let want = match c.capture.expect {
                CaptureExpect::Seen => "seen",
                CaptureExpect::None => "none",
            };
            let got = match (c.frames, &c.error) {
                (Some(n), _) => format!("{n} frame(s)"),
                (None, Some(e)) => format!("error: {e}"),
                (None, None) => "not run".into(),
            };
            let title = if c.capture.title.is_empty() {
                String::new()
            } else {
                format!("{}: ", c.capture.title)
            };
            let _ = writeln!(
                s,
                "capture {title}[{}/{}] `{}`: {got}, expected {want}{}",
                c.capture.ns,
                c.capture.dev,
                c.capture.filter,
                if c.ok() { "" } else { "   <-- NOT AS EXPECTED" }
            );
        }
        for c in &self.uvlan_captures {
            let title = if c.capture.title.is_empty() {
                String::new()
            } else {
                format!("{}: ", c.capture.title)
            };
            let got = match (c.records, &c.error) {
                (_, Some(e)) => format!("error: {e}"),
                (Some(n), None) => format!("{n} record(s), {} drops, {} lost", c.drops, c.lost),
                (None, None) => "not read".into(),
            };
            let kept = if c.kept {
                ""
            } else {
                " (removed with the lab; keep it with --out DIR)"
            };
            let _ = writeln!(
                s,
                "uvlan capture {title}[{}]: {got}: {}{kept}{}",
                c.capture.network,
                c.file.display(),
                if c.ok() {
                    String::new()
                } else {
                    format!("   <-- NOT AS EXPECTED: {}", c.problems.join("; "))
                }
            );
        }
        for a in &self.actions {
            if a.ok() {
                let _ = writeln!(s, "command {}: as expected", a.what);
            } else {
                let _ = writeln!(
                    s,
                    "command {}: {}   <-- NOT AS EXPECTED",
                    a.what,
                    a.problems.join("; ")
                );
            }
        }
        s
    }
}

/// The outcome of a lab.
#[derive(Debug, Clone)]
pub struct LabReport {
    /// The testbed.
    pub testbed: String,
    /// Every stage, in order.
    pub stages: Vec<StageReport>,
}

impl LabReport {
    /// Something was checked and everything was as expected.
    pub fn passed(&self) -> bool {
        self.stages.iter().map(StageReport::checked).sum::<usize>() > 0
            && self.stages.iter().all(StageReport::passed)
    }

    /// Every stage's reachability matrix (expected against observed: `yes`/`no`, or
    /// `got!=want`), capture and command results.
    pub fn matrix(&self) -> String {
        let mut s = String::new();
        let n = self.stages.len();
        for (i, st) in self.stages.iter().enumerate() {
            let _ = writeln!(s, "stage {}/{n}: {}", i + 1, st.title);
            s.push_str(&st.matrix());
        }
        s
    }
}

/// Renders the checks as matrices: one for IPv4 targets and one for IPv6 targets (`x/6`).
fn render_matrix(results: &[CheckResult]) -> String {
    let (v6, v4): (Vec<&CheckResult>, Vec<&CheckResult>) =
        results.iter().partition(|r| r.check.to.ends_with("/6"));
    let mut s = String::new();
    for (fam, set, suffix) in [("IPv4", &v4, ""), ("IPv6", &v6, "/6")] {
        for part in components(set, suffix) {
            if !v4.is_empty() && !v6.is_empty() {
                let _ = writeln!(s, "{fam}:");
            }
            s.push_str(&render_table(&part, suffix));
        }
    }
    s
}

/// Splits checks into groups that share no node, so unrelated matrices print apart.
fn components<'a>(results: &[&'a CheckResult], suffix: &str) -> Vec<Vec<&'a CheckResult>> {
    let mut groups: Vec<(Vec<String>, Vec<&'a CheckResult>)> = Vec::new();
    for r in results {
        let to = r
            .check
            .to
            .strip_suffix(suffix)
            .unwrap_or(&r.check.to)
            .to_string();
        let names = [r.check.from.clone(), to];
        let hits: Vec<usize> = groups
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| names.iter().any(|x| n.contains(x)))
            .map(|(i, _)| i)
            .collect();
        let mut merged: (Vec<String>, Vec<&'a CheckResult>) = (names.to_vec(), vec![*r]);
        for i in hits.into_iter().rev() {
            let (n, rs) = groups.remove(i);
            merged.0.extend(n);
            let mut rs = rs;
            rs.append(&mut merged.1);
            merged.1 = rs;
        }
        groups.push(merged);
    }
    // Keep the order in which the groups first appeared.
    groups.sort_by_key(|(_, rs)| {
        rs.iter()
            .filter_map(|r| results.iter().position(|x| std::ptr::eq(*x, *r)))
            .min()
            .unwrap_or(usize::MAX)
    });
    groups
        .into_iter()
        .map(|(_, mut rs)| {
            rs.sort_by_key(|r| results.iter().position(|x| std::ptr::eq(*x, *r)));
            rs
        })
        .collect()
}

fn render_table(results: &[&CheckResult], suffix: &str) -> String {
    let col = |to: &str| to.strip_suffix(suffix).unwrap_or(to).to_string();
    let mut rows: Vec<String> = Vec::new();
    let mut cols: Vec<String> = Vec::new();
    let mut cells: BTreeMap<(String, String), &CheckResult> = BTreeMap::new();
    for r in results {
        let c = col(&r.check.to);
        if !rows.contains(&r.check.from) {
            rows.push(r.check.from.clone());
        }
        if !cols.contains(&c) {
            cols.push(c.clone());
        }
        cells.insert((r.check.from.clone(), c), r);
    }
    if rows.is_empty() {
        return String::new();
    }
    // columns in row order where they are also rows (a square matrix reads naturally)
    cols.sort_by_key(|c| rows.iter().position(|r| r == c).unwrap_or(usize::MAX));
    // Each column as wide as its name (at least "yes!=no"), plus two spaces.
    let widths: Vec<usize> = cols.iter().map(|c| c.len().max(7) + 2).collect();
    let rw = rows.iter().map(|r| r.len()).max().unwrap_or(4).max(9) + 2;
    let mut s = String::new();
    let _ = write!(s, "{:rw$}", "from \\ to");
    for (c, w) in cols.iter().zip(&widths) {
        let _ = write!(s, "{c:>w$}");
    }
    s.push('\n');
    for r in &rows {
        let _ = write!(s, "{r:rw$}");
        for (c, w) in cols.iter().zip(&widths) {
            let cell = match cells.get(&(r.clone(), c.clone())) {
                None if r == c => "-".to_string(),
                None => "·".to_string(),
                Some(x) => {
                    let want = if x.check.expect == Expect::Reach {
                        "yes"
                    } else {
                        "no"
                    };
                    let got = if x.reached { "yes" } else { "no" };
                    let star = if x.check.kernel.is_some() { "*" } else { "" };
                    if x.ok() {
                        format!("{got}{star}")
                    } else {
                        format!("{got}!={want}{star}")
                    }
                }
            };
            let _ = write!(s, "{cell:>w$}");
        }
        s.push('\n');
    }
    if results.iter().any(|r| r.check.kernel.is_some()) {
        s.push_str("  * known divergence: the kernel driver gives the opposite (see the testbed's description)\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(from: &str, to: &str, expect: Expect, reached: bool) -> CheckResult {
        CheckResult {
            check: CheckSpec {
                from: from.into(),
                to: to.into(),
                expect,
                kernel: None,
            },
            addr: "192.0.2.1".parse().unwrap(),
            reached,
        }
    }

    #[test]
    fn matrix_marks_mismatches() {
        let r = LabReport {
            testbed: "t".into(),
            stages: vec![StageReport {
                title: "as built".into(),
                results: vec![
                    result("c1", "c2", Expect::Reach, true),
                    result("c2", "c1", Expect::Unreachable, true),
                ],
                captures: vec![],
                uvlan_captures: vec![],
                actions: vec![],
            }],
        };
        assert!(!r.passed());
        let m = r.matrix();
        assert!(m.contains("yes!=no"), "{m}");
        assert!(m.contains("stage 1/1: as built"), "{m}");
    }

    #[test]
    fn captures_and_commands_count_in_the_verdict() {
        let cap = |expect, frames| CaptureResult {
            capture: CaptureSpec {
                ns: "sw".into(),
                dev: "p1".into(),
                filter: "vlan 20".into(),
                expect,
                title: "tags on the wire".into(),
            },
            frames,
            error: None,
        };
        assert!(cap(CaptureExpect::Seen, Some(3)).ok());
        assert!(!cap(CaptureExpect::Seen, Some(0)).ok());
        assert!(cap(CaptureExpect::None, Some(0)).ok());
        assert!(!cap(CaptureExpect::None, Some(1)).ok());
        assert!(!cap(CaptureExpect::None, None).ok());
        let stage = |captures, actions| LabReport {
            testbed: "t".into(),
            stages: vec![StageReport {
                title: "s".into(),
                results: vec![result("a", "b", Expect::Reach, true)],
                captures,
                uvlan_captures: vec![],
                actions,
            }],
        };
        assert!(stage(vec![cap(CaptureExpect::Seen, Some(1))], vec![]).passed());
        let r = stage(vec![cap(CaptureExpect::Seen, Some(0))], vec![]);
        assert!(!r.passed());
        assert!(r.matrix().contains("NOT AS EXPECTED"), "{}", r.matrix());
        let bad = ActionResult {
            what: "[c1] ip route".into(),
            problems: vec!["no \"default\" in the output".into()],
        };
        let r = stage(vec![], vec![bad]);
        assert!(!r.passed());
        assert!(r.matrix().contains("ip route"), "{}", r.matrix());
        // A uvlan capture: a recording only counts when it fails; a check counts.
        let ucap = |expect: Vec<String>, problems: Vec<String>, error: Option<String>| {
            UvlanCaptureResult {
                capture: UvlanCaptureSpec {
                    network: "n1".into(),
                    host: None,
                    endpoints: vec![],
                    wire: false,
                    drops: true,
                    expect,
                    absent: vec![],
                    min_records: None,
                    title: String::new(),
                },
                file: PathBuf::from("/x/stage1-n1.pcapng"),
                kept: false,
                records: Some(4),
                drops: 1,
                lost: 0,
                problems,
                error,
            }
        };
        let with_ucap = |u| LabReport {
            testbed: "t".into(),
            stages: vec![StageReport {
                title: "s".into(),
                results: vec![],
                captures: vec![],
                uvlan_captures: vec![u],
                actions: vec![],
            }],
        };
        let only_recorded = with_ucap(ucap(vec![], vec![], None));
        assert!(!only_recorded.passed(), "a recording alone checks nothing");
        let m = only_recorded.matrix();
        assert!(
            m.contains("[n1]: 4 record(s), 1 drops, 0 lost: /x/stage1-n1.pcapng (removed"),
            "{m}"
        );
        assert!(with_ucap(ucap(vec!["drop".into()], vec![], None)).passed());
        let r = with_ucap(ucap(
            vec!["drop".into()],
            vec!["no record's verdict contains \"drop\"".into()],
            None,
        ));
        assert!(!r.passed());
        assert!(r.matrix().contains("NOT AS EXPECTED"), "{}", r.matrix());
        let r = with_ucap(ucap(vec!["drop".into()], vec![], Some("unreadable".into())));
        assert!(!r.passed());
        assert!(r.matrix().contains("error: unreadable"), "{}", r.matrix());
        // Nothing checked at all is not a pass.
        let empty = LabReport {
            testbed: "t".into(),
            stages: vec![StageReport {
                title: "s".into(),
                results: vec![],
                captures: vec![],
                uvlan_captures: vec![],
                actions: vec![],
            }],
        };
        assert!(!empty.passed());
    }
}
