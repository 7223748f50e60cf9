//! The coordinator's admin dashboard in a real headless Chromium (issue 5's acceptance).
//!
//! chromedriver and Chromium run inside the coordinator's namespace, which has no route
//! anywhere but the lab: the page, its script and its live updates come from the coordinator
//! alone (assets are embedded; nothing is fetched from the network).
//!
//! Screenshots land in `target/test-artefacts/` (README shows one of them).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use wiremesh_tests::control::{self, start_site, wait_full_mesh};
use wiremesh_tests::webdriver::Browser;
use wiremesh_tests::{wait_until, Lab};

/// Generous: the test shares two cores with the browser and the daemons.
const WAIT: Duration = Duration::from_secs(30);
const NETWORK: &str = "web";
const CIDR: &str = "10.77.0.0/24";
/// The policy set through the page: members tagged `ops` may not open tcp/10250 (the rule
/// at line 3), everything else is allowed; its test must hold.
const POLICY: &str = r#"default = "allow"

[[rule]]
action = "deny"
from = ["tag:ops"]
to = ["*"]
ports = ["tcp/10250"]

[[test]]
from = "tag:ops"
to = "tag:web"
port = "tcp/10250"
expect = "deny"
"#;

/// Where screenshots are kept after the test.
fn artefacts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artefacts")
}

/// The selector of the member row for the node whose public key is `key`.
fn member_row(key: &str) -> String {
    format!("tr.member[data-fingerprint=\"{}\"]", &key[..8])
}

/// Log in, create a network and a token in the page, see two nodes that join with it
/// appear without a reload, deauthorise one and see it marked and cut off from its peer,
/// authorise it again with one click, rename and re-address the other, tag it, set a
/// policy in the policy panel and see both members run it, see a malformed one refused
/// with its line marked and nothing changed, ask why and for a member's effective rules,
/// remove the policy, revoke the token, then log out.
#[test]
fn dashboard_drives_a_mesh_in_headless_chromium() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let coord = control::start_coordinator(&lab)?;
    let browser = Browser::start(coord.ns())?;
    let result = scenario(&lab, &coord, &browser);
    if result.is_err() {
        let _ = browser.screenshot(&artefacts().join("dashboard-failure.png"));
        eprintln!("chromedriver log:\n{}", browser.log_tail(30));
        eprintln!("coordinator log:\n{}", coord.log_tail(40));
    }
    result
}

fn scenario(
    lab: &Lab,
    coord: &wiremesh_tests::Coordinator,
    browser: &Browser,
) -> anyhow::Result<()> {
    let base = coord.admin_url();
    let admin_token = coord.admin_token()?;

    // Not logged in: the dashboard sends the browser to the login page.
    browser.goto(&format!("{base}/"))?;
    let url = browser.url()?;
    assert!(url.ends_with("/login"), "without a session / went to {url}");

    // A wrong token is refused, with a message and without a cookie.
    let field = browser.wait_for("#token", WAIT)?;
    browser.fill(&field, "wm-not-the-admin-token")?;
    browser.click(&browser.wait_for("#login-submit", WAIT)?)?;
    let error = browser.wait_for("#login-error", WAIT)?;
    assert!(
        !browser.text(&error)?.trim().is_empty(),
        "the login error is empty"
    );
    assert!(
        browser.cookies()?.is_empty(),
        "a wrong token got a cookie: {:?}",
        browser.cookies()?
    );

    // The right one opens the dashboard; the session cookie is HttpOnly and SameSite=Strict.
    let field = browser.wait_for("#token", WAIT)?;
    browser.fill(&field, &admin_token)?;
    browser.click(&browser.wait_for("#login-submit", WAIT)?)?;
    browser.wait_for("#net-create", WAIT)?;
    let cookies = browser.cookies()?;
    assert_eq!(cookies.len(), 1, "cookies after login: {cookies:?}");
    assert_eq!(cookies[0]["httpOnly"], true, "{cookies:?}");
    assert_eq!(cookies[0]["sameSite"], "Strict", "{cookies:?}");
    assert!(
        browser.exec("return document.cookie", vec![])? == "",
        "page script can read the session cookie"
    );
    let loaded_at = browser.exec("return window.wmLoadedAt", vec![])?;
    assert!(
        loaded_at.is_number(),
        "window.wmLoadedAt is not set: {loaded_at}"
    );
    browser.wait_for("#live", WAIT)?;

    // Create a network in the page; the coordinator has it.
    browser.fill(&browser.wait_for("#net-name", WAIT)?, NETWORK)?;
    browser.fill(&browser.wait_for("#net-cidr", WAIT)?, CIDR)?;
    browser.fill(&browser.wait_for("#net-mtu", WAIT)?, "1380")?;
    browser.click(&browser.wait_for("#net-create", WAIT)?)?;
    browser.wait_for(&format!("[data-network-tab=\"{NETWORK}\"]"), WAIT)?;
    let net = coord.admin_json(&["network", "show", NETWORK])?;
    assert_eq!(net["cidr"], CIDR, "{net}");
    assert_eq!(net["mtu"], 1380, "{net}");

    // Create a reusable join token in the page and read it from the page.
    let reusable = browser.wait_for("#token-reusable", WAIT)?;
    if browser.property(&reusable, "checked")? != true {
        browser.click(&reusable)?;
    }
    browser.click(&browser.wait_for("#token-create", WAIT)?)?;
    let secret_field = browser.wait_for("input#token-secret", WAIT)?;
    let mut secret = String::new();
    wait_until(WAIT, "the page shows the new join token", || {
        secret = browser
            .property(&secret_field, "value")
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        secret.starts_with("wm1_")
    })?;
    browser.wait_for("tr.token", WAIT)?;

    // Two nodes join with it; both appear, online, without the page being reloaded.
    let a = start_site(lab, 0, "a", None)?;
    let b = start_site(lab, 1, "b", None)?;
    for node in [&a, &b] {
        let control = node.join_with_token(NETWORK, &secret)?;
        assert_eq!(control["state"], "connected", "{}: {control}", node.name());
    }
    let nodes = [a, b];
    wait_full_mesh(&nodes, WAIT)?;
    let [a, b] = &nodes;
    let (a_key, b_key) = (a.public_key()?, b.public_key()?);
    for key in [&a_key, &b_key] {
        let row = format!(
            "{}[data-authorized=\"true\"][data-online=\"true\"]",
            member_row(key)
        );
        browser.wait_for(&row, WAIT)?;
    }
    // Each node reports how it reaches the other (both sit on the internet: direct), and
    // the page shows it per member.
    for key in [&a_key, &b_key] {
        browser.wait_for(&format!("{} .badge.path.direct", member_row(key)), WAIT)?;
    }
    let address_shown = browser
        .attr(
            &browser.wait_for(&member_row(&b_key), WAIT)?,
            "data-address",
        )?
        .unwrap_or_default();
    assert_eq!(address_shown, b.address()?, "b's address in the page");
    // Dual stack (the network's default): its IPv6 address too, in the row and the cell.
    let status = b.status()?;
    let b6 = status["address6"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .with_context(|| format!("b has no IPv6 address: {status}"))?
        .to_owned();
    let row = browser.wait_for(&member_row(&b_key), WAIT)?;
    assert_eq!(
        browser.attr(&row, "data-address6")?.as_deref(),
        Some(b6.as_str())
    );
    browser.wait_for(&format!("{} .address6", member_row(&b_key)), WAIT)?;
    // An IPv6 underlay endpoint (an admin-set public one here) is shown as IPv6, bracketed
    // with its port, among the endpoints the address cell lists.
    let endpoint6 = "[2001:db8::7]:51820";
    coord.admin(&["set-endpoint", NETWORK, "b", endpoint6])?;
    browser.wait_for(
        &format!("{} td[title*=\"{endpoint6}\"]", member_row(&b_key)),
        WAIT,
    )?;
    coord.admin(&["set-endpoint", NETWORK, "b", "--clear"])?;
    assert_not_reloaded(browser, &loaded_at)?;
    browser.screenshot(&artefacts().join("dashboard.png"))?;

    // Deauthorise b with one click: the page marks it, and b loses its peer (and a loses b).
    click_in_row(browser, &b_key, "button.deauthorize")?;
    browser.wait_for(
        &format!("{}[data-authorized=\"false\"].pending", member_row(&b_key)),
        WAIT,
    )?;
    wait_until(WAIT, "b has no peers and a no longer lists b", || {
        b.peer_keys().is_ok_and(|p| p.is_empty())
            && a.peer_keys().is_ok_and(|p| !p.contains(&b_key))
    })?;
    let member = coord
        .member(NETWORK, &b_key)?
        .ok_or_else(|| anyhow::anyhow!("the coordinator lost member b"))?;
    assert_eq!(member["authorized"], false, "{member}");

    // The audit log on the page shows what was done.
    wait_until(
        WAIT,
        "the page's audit log shows the deauthorisation",
        || audit_text(browser).contains("member.deauthorize"),
    )?;
    let audit = audit_text(browser);
    for action in ["network.create", "token.create", "member.deauthorize"] {
        assert!(
            audit.contains(action),
            "audit on the page lacks {action}:\n{audit}"
        );
    }
    assert!(
        audit.contains("admin-token/dashboard-"),
        "the audit log does not say the dashboard did it:\n{audit}"
    );
    assert_not_reloaded(browser, &loaded_at)?;
    browser.screenshot(&artefacts().join("dashboard-deauthorized.png"))?;

    // One click on the highlighted pending member lets b back in.
    click_in_row(browser, &b_key, "button.authorize")?;
    browser.wait_for(
        &format!("{}[data-authorized=\"true\"]", member_row(&b_key)),
        WAIT,
    )?;
    wait_until(WAIT, "a and b list each other again", || {
        b.peer_keys().is_ok_and(|p| p.contains(&a_key))
            && a.peer_keys().is_ok_and(|p| p.contains(&b_key))
    })?;

    // Rename a and give it another address through the page's prompts; a takes the address.
    answer_in_row(browser, &a_key, "button.rename", "alpha")?;
    browser.wait_for(
        &format!("{}[data-name=\"alpha\"]", member_row(&a_key)),
        WAIT,
    )?;
    answer_in_row(browser, &a_key, "button.set-address", "10.77.0.50")?;
    browser.wait_for(
        &format!("{}[data-address=\"10.77.0.50\"]", member_row(&a_key)),
        WAIT,
    )?;
    wait_until(WAIT, "a uses its new address", || {
        a.address().is_ok_and(|ip| ip == "10.77.0.50")
    })?;
    let member = coord
        .member(NETWORK, &a_key)?
        .ok_or_else(|| anyhow::anyhow!("the coordinator lost member a"))?;
    assert_eq!(
        (&member["name"], &member["address"]),
        (&"alpha".into(), &"10.77.0.50".into()),
        "{member}"
    );

    policy(browser, coord, &a_key, &b_key)?;
    assert_not_reloaded(browser, &loaded_at)?;

    // Revoke the token: the page marks it, and the coordinator refuses it.
    browser.click(&browser.wait_for("tr.token button.revoke", WAIT)?)?;
    browser.wait_for("tr.token.inactive", WAIT)?;
    let tokens = coord.admin_json(&["token", "list", NETWORK])?;
    assert_eq!(tokens[0]["revoked"], true, "{tokens}");

    // Log out: the dashboard is closed again.
    browser.click(&browser.wait_for("#logout", WAIT)?)?;
    browser.wait_for("#token", WAIT)?;
    browser.goto(&format!("{base}/"))?;
    let url = browser.url()?;
    assert!(url.ends_with("/login"), "after logout / went to {url}");
    Ok(())
}

/// Issue 13 in the page: tags, the policy panel, the Filter column, why, effective rules.
/// `a` is named `alpha` by now; both members are online.
fn policy(
    browser: &Browser,
    coord: &wiremesh_tests::Coordinator,
    a_key: &str,
    b_key: &str,
) -> anyhow::Result<()> {
    let stored = || -> anyhow::Result<serde_json::Value> {
        Ok(coord.admin_json(&["policy", "get", NETWORK])?["document"].clone())
    };
    // No policy yet: the editor is empty and no member runs a filter.
    let editor = browser.wait_for("#policy-doc", WAIT)?;
    assert_eq!(
        browser.property(&editor, "value")?,
        "",
        "an empty network's policy"
    );
    for key in [a_key, b_key] {
        browser.wait_for(&format!("{}[data-filter=\"-\"]", member_row(key)), WAIT)?;
    }

    // Tag a through the page's prompt: the row and the coordinator have the tags (sorted).
    answer_in_row(browser, a_key, "button.set-tags", "web ops")?;
    browser.wait_for(
        &format!("{}[data-tags=\"ops web\"]", member_row(a_key)),
        WAIT,
    )?;
    let tags = &browser.find_all(&format!("{} td.tags-cell .badge.tag", member_row(a_key)))?;
    assert_eq!(tags.len(), 2, "tag badges in a's row");
    let member = coord
        .member(NETWORK, a_key)?
        .ok_or_else(|| anyhow::anyhow!("the coordinator lost member a"))?;
    assert_eq!(
        member["tags"],
        serde_json::json!(["ops", "web"]),
        "{member}"
    );

    // Check a valid document: the panel says what it holds; nothing is set.
    browser.fill(&editor, POLICY)?;
    let answer = policy_answer(browser, "#policy-check")?;
    assert_eq!(
        answer, "ok: default allow, 1 rule, 1 test (all pass); not saved",
        "check"
    );
    assert_eq!(stored()?, serde_json::Value::Null, "check set the policy");

    // Save it: the coordinator has it, and both members come to run it (Filter column).
    let answer = policy_answer(browser, "#policy-save")?;
    assert_eq!(answer, "saved: default allow, 1 rule, 1 test (all pass)");
    assert_eq!(stored()?, POLICY, "the stored policy");
    let summary = browser.text(&browser.wait_for("#policy-summary", WAIT)?)?;
    assert_eq!(summary, "default allow, 1 rule, 1 test (all pass)");
    for key in [a_key, b_key] {
        browser.wait_for(
            &format!(
                "{}[data-filter=\"current\"] td.filter-cell .badge.ok",
                member_row(key)
            ),
            WAIT,
        )?;
        let member = coord
            .member(NETWORK, key)?
            .ok_or_else(|| anyhow::anyhow!("the coordinator lost member {}", &key[..8]))?;
        assert_eq!(member["filter"]["current"], true, "{member}");
    }

    // A malformed document (an unknown group on line 5) is refused with its line, which the
    // editor marks; the stored policy is unchanged, and the edits stay in the editor
    // through the refreshes that follow.
    let bad = POLICY.replace(r#"from = ["tag:ops"]"#, r#"from = ["group:nope"]"#);
    browser.fill(&editor, &bad)?;
    let answer = policy_answer(browser, "#policy-save")?;
    assert!(
        answer.starts_with("policy line 5: ") && answer.contains("group:nope"),
        "the refusal: {answer:?}"
    );
    let marked = browser.find_all("#policy-lines span.bad")?;
    assert_eq!(marked.len(), 1, "one line marked");
    assert_eq!(browser.attr(&marked[0], "data-line")?.as_deref(), Some("5"));
    assert_eq!(stored()?, POLICY, "a refused document changed the policy");
    let answer = policy_answer(browser, "#policy-check")?;
    assert!(answer.starts_with("policy line 5: "), "check: {answer:?}");
    browser.screenshot(&artefacts().join("dashboard-policy-refused.png"))?;
    assert_eq!(browser.property(&editor, "value")?, bad.as_str());
    // Revert: the stored document again.
    browser.click(&browser.wait_for("#policy-revert", WAIT)?)?;
    assert_eq!(browser.property(&editor, "value")?, POLICY);
    browser.wait_gone("#policy-lines span.bad", WAIT)?;

    // Why, between members by name: a (tagged ops) may not open tcp/10250 on b (line 3);
    // b may open it on a (no rule: the default).
    let b_name = coord
        .member(NETWORK, b_key)?
        .and_then(|m| m["name"].as_str().map(str::to_owned))
        .ok_or_else(|| anyhow::anyhow!("the coordinator lost member b"))?;
    for (from, to, want) in [
        ("alpha", b_name.as_str(), "deny: rule at line 3: "),
        (
            b_name.as_str(),
            "alpha",
            "allow: no rule matches, the default decides",
        ),
    ] {
        browser.fill(&browser.wait_for("#why-from", WAIT)?, from)?;
        browser.fill(&browser.wait_for("#why-to", WAIT)?, to)?;
        browser.fill(&browser.wait_for("#why-port", WAIT)?, "tcp/10250")?;
        let result = browser.wait_for("#why-result", WAIT)?;
        let before = browser.text(&result)?;
        browser.click(&browser.wait_for("#why-ask", WAIT)?)?;
        let mut got = String::new();
        wait_until(WAIT, "the page answers why", || {
            got = browser.text(&result).unwrap_or_default();
            !got.is_empty() && got != before
        })?;
        assert!(got.starts_with(want), "why {from} -> {to}: {got:?}");
    }

    // a's effective rules for that port: denied towards b (line 3), allowed from b.
    click_in_row(browser, a_key, "button.rules")?;
    let row = format!("#effective[data-member=\"alpha\"][data-port=\"tcp/10250\"] tr.effective-peer[data-peer=\"{b_name}\"]");
    browser.wait_for(&format!("{row} td.decision[data-action=\"allow\"]"), WAIT)?;
    let cells = browser.find_all(&format!("{row} td.decision"))?;
    assert_eq!(cells.len(), 2, "outgoing and incoming");
    assert_eq!(
        browser.attr(&cells[0], "data-action")?.as_deref(),
        Some("deny")
    );
    assert_eq!(browser.attr(&cells[0], "data-line")?.as_deref(), Some("3"));
    assert_eq!(
        browser.attr(&cells[1], "data-action")?.as_deref(),
        Some("allow")
    );
    browser.exec(
        "document.getElementById('policy-card').scrollIntoView()",
        vec![],
    )?;
    browser.screenshot(&artefacts().join("dashboard-policy.png"))?;
    browser.exec("window.scrollTo(0, 0)", vec![])?;

    // Remove it, after a confirmation: no policy on the coordinator, the panel says so.
    browser.click(&browser.wait_for("#policy-remove", WAIT)?)?;
    browser.wait_dialog(WAIT)?;
    browser.accept_dialog()?;
    browser.wait_for("#policy-result[data-state=\"ok\"]", WAIT)?;
    let mut answer = String::new();
    wait_until(WAIT, "the panel says the policy is removed", || {
        answer = browser
            .find("#policy-result")
            .ok()
            .flatten()
            .and_then(|r| browser.text(&r).ok())
            .unwrap_or_default();
        answer.starts_with("removed")
    })?;
    assert_eq!(answer, "removed: everything allowed between members");
    assert_eq!(
        stored()?,
        serde_json::Value::Null,
        "the policy is still set"
    );
    assert_eq!(browser.property(&editor, "value")?, "");
    Ok(())
}

/// Clicks `button` of the policy panel and waits for its answer (the button's click
/// handler marks the answer busy before it returns): the text of `#policy-result`.
fn policy_answer(browser: &Browser, button: &str) -> anyhow::Result<String> {
    browser.click(&browser.wait_for(button, WAIT)?)?;
    let result = browser.wait_for(
        "#policy-result[data-state=\"ok\"], #policy-result[data-state=\"error\"]",
        WAIT,
    )?;
    browser.text(&result)
}

/// Clicks the button matching `selector` in the member row of `key`.
fn click_in_row(browser: &Browser, key: &str, selector: &str) -> anyhow::Result<()> {
    let button = browser
        .find_all(&format!("{} {selector}", member_row(key)))?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no {selector} in the row of {}", &key[..8]))?;
    browser.scroll_into_view(&button)?;
    browser.click(&button)
}

/// Clicks the button matching `selector` in the member row of `key` and answers the
/// `prompt()` it opens with `answer`.
fn answer_in_row(browser: &Browser, key: &str, selector: &str, answer: &str) -> anyhow::Result<()> {
    click_in_row(browser, key, selector)?;
    browser.wait_dialog(WAIT)?;
    browser.answer_prompt(answer)
}

/// Fails if the page was loaded again since `loaded_at` (its `window.wmLoadedAt` then).
fn assert_not_reloaded(browser: &Browser, loaded_at: &serde_json::Value) -> anyhow::Result<()> {
    let now = browser.exec("return window.wmLoadedAt", vec![])?;
    assert_eq!(&now, loaded_at, "the page was reloaded");
    Ok(())
}

/// The text of every audit row in the page.
fn audit_text(browser: &Browser) -> String {
    let rows = browser
        .find_all("#audit tr.audit-entry")
        .unwrap_or_default();
    rows.iter()
        .filter_map(|r| browser.text(r).ok())
        .collect::<Vec<_>>()
        .join("\n")
}
