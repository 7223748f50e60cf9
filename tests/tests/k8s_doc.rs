//! docs/kubernetes.md, run (issue 14, item 4): every command the walk-through gives a
//! reader is either run here, as the page writes it, or named in [`NOT_HERE`] with the
//! reason it cannot run on this machine. A command added to the page that is neither
//! fails the test, and so does a [`NOT_HERE`] entry the page no longer has.
//!
//! The commands are taken from the page itself: every line of its ```sh blocks (a trailing
//! `# comment` dropped), the `$ command` lines of its ```text blocks (the output below
//! must be what the node prints), and the inline code spans that start with a program a
//! reader runs (`meshctl`, `$A`, `coordinator`, `kubectl`, …). Each runs in `bash` inside
//! the namespace of the host the page runs it on, with the lab's values substituted for
//! the page's placeholders ([`Walk::substitute`]: the coordinator's address, the admin
//! token's path, the three hosts' names, …).
//!
//! The lab is the page's: a coordinator on the internet and three nodes behind a cone, a
//! cone and a symmetric NAT, joined to network `k8s` in that order (so they get the page's
//! 10.9.8.1, .2 and .3), plus a fourth node that joins without a token and waits for
//! `authorize`. Needs root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use serde_json::Value;
use wiremesh_tests::control::COORDINATOR_IP;
use wiremesh_tests::lab::{ping_once, Lab, NatKind};
use wiremesh_tests::netns::Netns;
use wiremesh_tests::sites::{NatMesh, SiteSpec};
use wiremesh_tests::util::{self, TempDir};
use wiremesh_tests::Meshd;

/// Generous: tests share two cores with other tests.
const CONVERGE: Duration = Duration::from_secs(30);

/// The page, relative to this crate.
const PAGE: &str = "../docs/kubernetes.md";

/// The programs whose inline code spans are commands a reader runs.
const PROGRAMS: &[&str] = &[
    "$A",
    "meshctl",
    "coordinator",
    "kubectl",
    "kubeadm",
    "systemctl",
    "apt",
    "ping",
    "curl",
];

/// Commands of the page that are not run here (a prefix of the command), and why.
const NOT_HERE: &[(&str, &str)] = &[
    (
        "apt install ./wiremesh-",
        "installing packages would change the test machine: packaging/check.sh (in .ci/run) \
         builds both packages, installs them with dpkg -i, verifies the units and removes them",
    ),
    (
        "systemctl enable --now",
        "no systemd runs the tests: the lab starts `coordinator serve` and an unconfigured \
         `meshd` as the units do (packaging/check.sh runs systemd-analyze verify on the units)",
    ),
    ("kubeadm ", "no Kubernetes binaries on this machine"),
    ("kubectl ", "no Kubernetes binaries on this machine"),
    (
        "curl http://uc-1.k8s.mesh.internal",
        "a pod's request through CoreDNS: no Kubernetes here; the names it relies on are \
         resolved from every node by tests/names.rs",
    ),
];

/// One command of the page.
#[derive(Debug, Clone)]
struct PageCommand {
    /// 1-based line of the page.
    line: usize,
    /// The command as written (continuation lines joined, no trailing comment).
    text: String,
    /// For a `$ command` line of a ```text block: the output shown below it.
    output: Option<String>,
}

/// The commands of a markdown page (see the module documentation).
fn page_commands(page: &str) -> Vec<PageCommand> {
    let mut out = Vec::new();
    let mut fence: Option<String> = None;
    // Prose since the last fence, as (line, text): code spans may wrap across lines.
    let mut prose: Vec<(usize, &str)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    let lines: Vec<&str> = page.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let number = i + 1;
        i += 1;
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            inline_commands(&std::mem::take(&mut prose), &mut out);
            fence = match fence {
                Some(_) => None,
                None => Some(info.trim().to_owned()),
            };
            continue;
        }
        match fence.as_deref() {
            Some("sh") => {
                let (start, mut text) = pending.take().unwrap_or((number, String::new()));
                let code = strip_comment(line);
                if let Some(head) = code.trim_end().strip_suffix('\\') {
                    text.push_str(head);
                    pending = Some((start, text));
                    continue;
                }
                text.push_str(code);
                let text = text.trim().to_owned();
                if !text.is_empty() {
                    out.push(PageCommand {
                        line: start,
                        text,
                        output: None,
                    });
                }
            }
            Some("text") => {
                if let Some(command) = trimmed.strip_prefix("$ ") {
                    let mut shown = Vec::new();
                    while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                        shown.push(lines[i]);
                        i += 1;
                    }
                    out.push(PageCommand {
                        line: number,
                        text: command.trim().to_owned(),
                        output: Some(shown.join("\n")),
                    });
                }
            }
            Some(_) => {}
            None => prose.push((number, line)),
        }
    }
    inline_commands(&prose, &mut out);
    out.sort_by_key(|c| c.line);
    out
}

/// The code spans of `prose` (lines with their numbers) that are commands: they start
/// with one of [`PROGRAMS`] and have arguments. A span wrapped across lines is one
/// command, its line breaks read as spaces.
fn inline_commands(prose: &[(usize, &str)], out: &mut Vec<PageCommand>) {
    let mut span: Option<(usize, String)> = None;
    for &(number, line) in prose {
        if line.trim().is_empty() {
            span = None; // a span never crosses a paragraph
            continue;
        }
        for (k, piece) in line.split('`').enumerate() {
            if k > 0 {
                // A backtick: a span opens or closes here.
                span = match span.take() {
                    None => Some((number, String::new())),
                    Some((start, text)) => {
                        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                        let first = text.split(' ').next().unwrap_or("");
                        if text.contains(' ') && PROGRAMS.contains(&first) {
                            out.push(PageCommand {
                                line: start,
                                text,
                                output: None,
                            });
                        }
                        None
                    }
                };
            }
            if let Some((_, text)) = span.as_mut() {
                text.push_str(piece);
            }
        }
        if let Some((_, text)) = span.as_mut() {
            text.push(' ');
        }
    }
}

/// `line` without a `# comment` that starts outside quotes after whitespace.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (at, c) in line.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') if previous.is_whitespace() => return &line[..at],
            _ => {}
        }
        previous = c;
    }
    line
}

/// The page's commands being run: which ran, and the shell variables set so far.
struct Walk {
    commands: Vec<PageCommand>,
    ran: Vec<bool>,
    /// (placeholder on the page, the lab's value), applied in order.
    substitutions: Vec<(String, String)>,
    /// Shell variables set by the page's assignments (`A=…`, `TOKEN=$(…)`).
    vars: BTreeMap<String, String>,
}

impl Walk {
    fn new(page: &str) -> Walk {
        let commands = page_commands(page);
        let ran = vec![false; commands.len()];
        Walk {
            commands,
            ran,
            substitutions: Vec::new(),
            vars: BTreeMap::new(),
        }
    }

    fn substitute(&mut self, placeholder: &str, value: &str) {
        self.substitutions
            .push((placeholder.to_owned(), value.to_owned()));
    }

    fn apply(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (from, to) in &self.substitutions {
            text = text.replace(from, to);
        }
        text
    }

    /// The page's command that is `prefix`, or else starts with it (one distinct text;
    /// every occurrence of it counts as run). Fails when there is none or several.
    fn find(&mut self, prefix: &str) -> anyhow::Result<PageCommand> {
        // A command written out whole is that command, not every one it begins.
        let exact = self.commands.iter().any(|c| c.text == prefix);
        let matching: Vec<usize> = (0..self.commands.len())
            .filter(|&i| {
                let text = &self.commands[i].text;
                if exact {
                    text == prefix
                } else {
                    text.starts_with(prefix)
                }
            })
            .collect();
        let first = *matching.first().with_context(|| {
            format!("{PAGE} has no command starting with {prefix:?} any more: update the test")
        })?;
        let text = self.commands[first].text.clone();
        if let Some(&other) = matching.iter().find(|&&i| self.commands[i].text != text) {
            bail!(
                "{PAGE}: {prefix:?} matches two commands: {:?} (line {}) and {:?} (line {})",
                text,
                self.commands[first].line,
                self.commands[other].text,
                self.commands[other].line
            );
        }
        for i in matching {
            self.ran[i] = true;
        }
        let mut command = self.commands[first].clone();
        // The ```text block's output, if any occurrence has one.
        command.output = self
            .commands
            .iter()
            .filter(|c| c.text == text)
            .find_map(|c| c.output.clone());
        Ok(command)
    }

    /// Runs the page's command starting with `prefix` in `bash` inside `ns` (with
    /// `MESHCTL_SOCKET` set to `node`'s socket when given); fails unless it exits 0.
    /// Returns stdout. An assignment (`NAME=…`) keeps the variable for later commands.
    fn run(&mut self, ns: &Netns, node: Option<&Meshd>, prefix: &str) -> anyhow::Result<String> {
        let command = self.find(prefix)?;
        self.run_text(ns, node, &command)
    }

    fn run_text(
        &mut self,
        ns: &Netns,
        node: Option<&Meshd>,
        command: &PageCommand,
    ) -> anyhow::Result<String> {
        let script = self.apply(&command.text);
        let assigned = assignment(&script);
        let mut full = format!("{script}\n");
        if let Some(name) = &assigned {
            full.push_str(&format!("printf '%s' \"${name}\"\n"));
        }
        let mut cmd = ns.command("bash");
        cmd.args(["-e", "-o", "pipefail", "-c", &full]);
        cmd.env("PATH", search_path()?);
        if let Some(node) = node {
            cmd.env("MESHCTL_SOCKET", node.socket());
        }
        for (name, value) in &self.vars {
            cmd.env(name, value);
        }
        let out = util::output(&mut cmd)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!(
            "[k8s_doc] {PAGE}:{} $ {script}\n{}{}",
            command.line,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            out.status.success(),
            "{PAGE}:{}: `{script}` failed ({}):\n{}{}",
            command.line,
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(name) = assigned {
            ensure!(
                !stdout.trim().is_empty(),
                "{PAGE}:{}: `{script}` left ${name} empty",
                command.line
            );
            self.vars.insert(name, stdout.clone());
        }
        Ok(stdout)
    }

    /// Marks the page's commands covered by [`NOT_HERE`]; fails on a command that is
    /// neither run nor there, and on an entry of [`NOT_HERE`] that matches nothing.
    fn finish(mut self) -> anyhow::Result<()> {
        for (prefix, _why) in NOT_HERE {
            let mut any = false;
            for (i, c) in self.commands.iter().enumerate() {
                if c.text.starts_with(prefix) {
                    self.ran[i] = true;
                    any = true;
                }
            }
            ensure!(
                any,
                "NOT_HERE names {prefix:?}, which {PAGE} no longer has: remove the entry"
            );
        }
        // A span naming a command without all its arguments (`meshctl join` in prose) is
        // covered by a run of that command.
        let ran: Vec<String> = (0..self.commands.len())
            .filter(|&i| self.ran[i])
            .map(|i| format!("{} ", self.commands[i].text))
            .collect();
        for (i, c) in self.commands.iter().enumerate() {
            if ran.iter().any(|r| r.starts_with(&format!("{} ", c.text))) {
                self.ran[i] = true;
            }
        }
        let missed: Vec<String> = self
            .commands
            .iter()
            .zip(&self.ran)
            .filter(|(_, ran)| !**ran)
            .map(|(c, _)| format!("  line {}: {}", c.line, c.text))
            .collect();
        ensure!(
            missed.is_empty(),
            "{PAGE} has commands no test runs (run them here, or say in NOT_HERE why they \
             cannot be):\n{}",
            missed.join("\n")
        );
        Ok(())
    }
}

/// `NAME` when `script` starts with the assignment `NAME=…`.
fn assignment(script: &str) -> Option<String> {
    let (name, _) = script.split_once('=')?;
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        && !script.starts_with(char::is_numeric);
    ok.then(|| name.to_owned())
}

/// The workspace's binaries first, then the usual system directories.
fn search_path() -> anyhow::Result<String> {
    Ok(format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        util::bin_dir()?.display()
    ))
}

fn read_page() -> anyhow::Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(PAGE);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// The page's ```toml block (the coordinator's configuration).
fn toml_block(page: &str) -> anyhow::Result<String> {
    let start = page.find("```toml\n").context("no ```toml block")? + "```toml\n".len();
    let end = page[start..]
        .find("```")
        .context("unterminated ```toml block")?;
    Ok(page[start..start + end].to_owned())
}

#[test]
fn the_page_yields_its_commands() -> anyhow::Result<()> {
    // Pure parsing, no root: the extraction the walk relies on.
    let page = "intro `meshctl status` and `--json`, `kubectl get nodes -o wide`\n\
                ```sh\n\
                A=\"x y\"   # a comment\n\
                echo \"a # not a comment\" \\\n  | tail -1\n\
                # only a comment\n\
                \n\
                ```\n\
                ```text\n\
                $ meshctl k8s\n\
                out 1\n\
                out 2\n\
                ```\n\
                ```yaml\n\
                kubeadm: not a command\n\
                ```\n\
                prose `meshctl join k8s\n\
                --coordinator x` wraps, `apt` alone is no command\n";
    let got: Vec<(usize, String, Option<String>)> = page_commands(page)
        .into_iter()
        .map(|c| (c.line, c.text, c.output))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "meshctl status".to_owned(), None),
            (1, "kubectl get nodes -o wide".to_owned(), None),
            (3, "A=\"x y\"".to_owned(), None),
            (4, "echo \"a # not a comment\"   | tail -1".to_owned(), None),
            (
                10,
                "meshctl k8s".to_owned(),
                Some("out 1\nout 2".to_owned())
            ),
            (17, "meshctl join k8s --coordinator x".to_owned(), None),
        ]
    );
    assert_eq!(assignment("TOKEN=$(x | tail -1)").as_deref(), Some("TOKEN"));
    assert_eq!(assignment("echo KUBELET=1"), None);
    assert_eq!(assignment("meshctl join k8s --token \"$TOKEN\""), None);

    // The real page has the commands the walk below runs.
    let real = page_commands(&read_page()?);
    assert!(
        real.iter()
            .any(|c| c.text.starts_with("meshctl join k8s --token"))
            && real.iter().any(|c| c.output.is_some()),
        "{real:#?}"
    );
    Ok(())
}

#[test]
fn every_command_of_the_kubernetes_page_runs() -> anyhow::Result<()> {
    util::require_root()?;
    let page = read_page()?;
    let mut walk = Walk::new(&page);
    let lab = Lab::new()?;
    // tc-1, bwh-1, uc-1 behind a cone, a cone and a symmetric NAT; d joins with a pin.
    let mut mesh = NatMesh::new(&lab, &SiteSpec::cone_cone_symmetric())?;
    mesh.add_site(&lab, SiteSpec::one(NatKind::Cone))?;
    let files = TempDir::new("k8sdoc")?;
    let coordinator_toml = files.path().join("coordinator.toml");
    let kubelet_defaults = files.path().join("kubelet");
    let coord_ns = mesh.coord.ns().clone();

    for (page_name, node) in [("tc-1", 0), ("bwh-1", 1), ("uc-1", 2)] {
        walk.substitute(page_name, mesh.nodes[node].name());
    }
    walk.substitute("<name>", mesh.nodes[3].name());
    walk.substitute("45.x.x.x", COORDINATOR_IP);
    walk.substitute("http://127.0.0.1:7480", &mesh.coord.admin_url());
    walk.substitute(
        "/var/lib/wiremesh-coordinator/admin.token",
        &path_str(&mesh.coord.token_file()),
    );
    walk.substitute(
        "/etc/wiremesh/coordinator.toml",
        &path_str(&coordinator_toml),
    );
    walk.substitute("/etc/default/kubelet", &path_str(&kubelet_defaults));
    walk.substitute("sha256:…", &mesh.coord.pin()?);

    // 2. The coordinator: the page's configuration (its data directory is the lab's), and
    // the pin read from it.
    let toml = walk.apply(&toml_block(&page)?);
    std::fs::write(
        &coordinator_toml,
        format!(
            "{toml}data-dir = {}\n",
            Value::String(path_str(mesh.coord.data_dir()))
        ),
    )?;
    let pin = walk.run(&coord_ns, None, "coordinator pin --config")?;
    assert_eq!(pin.trim(), mesh.coord.pin()?);

    // 3. A network and a join token.
    walk.run(&coord_ns, None, "A=")?;
    walk.run(&coord_ns, None, "$A network create k8s")?;
    walk.run(&coord_ns, None, "TOKEN=$($A token create k8s")?;
    // The coordinator picked the network's IPv6 prefix at random; the page shows
    // fd5e:1f2a:9c00::/64.
    let shown = mesh.coord.admin_json(&["network", "show", "k8s"])?;
    let cidr6: ipnet::Ipv6Net = shown["cidr6"]
        .as_str()
        .with_context(|| format!("network k8s is not dual-stack: {shown}"))?
        .parse()?;
    let ula = format!("{}", cidr6.network());
    let page_ula = "fd5e:1f2a:9c00::";

    // 4. Join every host, in the page's order: they get the page's addresses.
    for (i, expected) in ["10.9.8.1", "10.9.8.2", "10.9.8.3"].iter().enumerate() {
        let node = &mesh.nodes[i];
        walk.run(node.ns(), Some(&node.meshd), "meshctl join k8s --token")?;
        assert_eq!(node.meshd.address()?, *expected, "{}", node.describe());
    }
    // Without a token: pending until the admin authorizes it.
    let d = &mesh.nodes[3];
    walk.run(d.ns(), Some(&d.meshd), "meshctl join k8s --coordinator")?;
    assert_eq!(
        d.meshd.control_state().as_deref(),
        Some("pending"),
        "{}",
        d.describe()
    );
    walk.run(&coord_ns, None, "$A authorize k8s")?;
    d.meshd.wait_control_state("connected", CONVERGE)?;
    mesh.wait_peers(CONVERGE)?;

    // 5. Check the paths: every host pings every other's overlay address (the page's own
    // `ping` once, then the other pairs), the cone pair direct, the symmetric site relayed.
    let a = &mesh.nodes[0];
    let ping = walk.find("ping 10.9.8.2")?;
    let once = walk
        .apply(&ping.text)
        .replacen("ping ", "ping -c 1 -W 1 ", 1);
    util::wait_until(CONVERGE, &once, || {
        a.ns()
            .command("sh")
            .args(["-c", &once])
            .status()
            .is_ok_and(|s| s.success())
    })?;
    let ips: Vec<String> = (0..mesh.nodes.len())
        .map(|i| mesh.overlay_ip(i))
        .collect::<Result<_, _>>()?;
    for (i, node) in mesh.nodes.iter().enumerate() {
        for (j, ip) in ips.iter().enumerate() {
            if i != j {
                util::wait_until(CONVERGE, &format!("{} ping", mesh.pair(i, j)), || {
                    ping_once(node.ns(), ip)
                })?;
            }
        }
    }
    for (i, j) in [(0, 1), (0, 2), (1, 2)] {
        mesh.wait_path(i, j, mesh.expected_path(i, j), CONVERGE)?;
    }
    let status = walk.run(a.ns(), Some(&a.meshd), "meshctl status")?;
    for word in [
        "direct",
        "relay",
        mesh.nodes[1].name(),
        mesh.nodes[2].name(),
    ] {
        assert!(
            status.contains(word),
            "no {word:?} in meshctl status:\n{status}"
        );
    }
    walk.run(a.ns(), Some(&a.meshd), "meshctl ping uc-1")?;
    // The page: behind the symmetric NAT, netcheck says endpoint-dependent.
    let c = &mesh.nodes[2];
    let netcheck = walk.run(c.ns(), Some(&c.meshd), "meshctl netcheck")?;
    assert!(
        netcheck.contains("NAT mapping: endpoint-dependent"),
        "{netcheck}"
    );

    // 6. `meshctl k8s` on tc-1 prints what the page shows (its interface is mesh0 there).
    let k8s = walk.find("meshctl k8s")?;
    let shown = k8s
        .output
        .as_deref()
        .context("no output shown for meshctl k8s")?
        .replace("mesh0", &a.meshd.config().interface)
        .replace(page_ula, &ula);
    let printed = walk.run_text(a.ns(), Some(&a.meshd), &k8s)?;
    assert_eq!(printed.trim_end(), shown.trim_end());
    let report: Value =
        serde_json::from_str(&walk.run(a.ns(), Some(&a.meshd), "meshctl k8s --json")?)?;
    assert_eq!(report["node-ip"], "10.9.8.1", "{report}");
    walk.run(a.ns(), Some(&a.meshd), "echo \"KUBELET_EXTRA_ARGS=")?;
    assert_eq!(
        std::fs::read_to_string(&kubelet_defaults)?,
        format!("KUBELET_EXTRA_ARGS=--node-ip=10.9.8.1,{ula}1\n")
    );

    // host-gw: uc-1 advertises its pod CIDR (the page's meshd.toml line, then a restart),
    // the admin approves it, members shows it, and tc-1 routes it to uc-1.
    let pod_cidr = "10.244.3.0/24";
    let config = mesh.nodes[2]
        .meshd
        .config()
        .clone()
        .advertising(&[pod_cidr]);
    mesh.nodes[2].meshd.restart_with(config)?;
    mesh.nodes[2]
        .meshd
        .wait_control_state("connected", CONVERGE)?;
    util::wait_until(
        CONVERGE,
        "the coordinator sees uc-1's advertised route",
        || {
            let members = mesh.coord.admin(&["members", "k8s"]).unwrap_or_default();
            members.contains(pod_cidr)
        },
    )?;
    walk.run(&coord_ns, None, "$A approve-route k8s uc-1")?;
    let members = walk.run(&coord_ns, None, "$A members k8s")?;
    assert!(members.contains(pod_cidr), "{members}");
    let c_key = mesh.nodes[2].key.clone();
    let a = &mesh.nodes[0];
    util::wait_until(
        CONVERGE,
        "tc-1 routes the approved pod CIDR to uc-1",
        || {
            a.meshd.peer_status(&c_key).is_ok_and(|p| {
                p["allowed-ips"]
                    .as_array()
                    .is_some_and(|ips| ips.iter().any(|ip| ip == pod_cidr))
            })
        },
    )?;

    // A forwarded port, told to the coordinator: the members list shows it for uc-1.
    walk.run(&coord_ns, None, "$A set-endpoint k8s uc-1")?;
    let listed = mesh.coord.admin_json(&["members", "k8s"])?;
    assert!(listed.to_string().contains("203.0.113.7:51820"), "{listed}");

    walk.finish()
}

fn path_str(path: &Path) -> String {
    PathBuf::from(path).to_string_lossy().into_owned()
}
