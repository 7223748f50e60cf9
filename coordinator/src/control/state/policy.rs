//! Policy operations (issue 13): a network's policy document, members' tags, the decision
//! for one connection (`acl why`), and what each member reported it enforces.
//!
//! The document is checked (syntax, references, its own tests) before anything is
//! written: a refused document changes nothing. Setting it or a member's tags republishes
//! the network's snapshot; each session computes its member's filter from the snapshot and
//! sends the changes ([`mesh_proto::policy::FilterUpdate`]).

use std::collections::BTreeSet;

use mesh_proto::policy::{self, Decision, Policy, Probe, Proto};
use mesh_proto::Key;

use super::admin::{find_member, network};
use super::{Change, Coordinator, Error};

/// A network's policy as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyState {
    /// The document (`None`: none set, everything allowed between members).
    pub document: Option<String>,
    /// Its rules, tests and default, parsed.
    pub policy: Policy,
}

/// What a member reported about the filter it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterReport {
    /// The hash of the filter it enforces.
    pub hash: String,
    /// Why it could not apply the last update (it fails closed for the peers concerned).
    pub error: Option<String>,
}

/// The answer to `acl why`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Why {
    /// The decision.
    pub decision: Decision,
    /// The deciding rule's line in the document, if a rule decided.
    pub line: Option<usize>,
    /// The deciding rule as one line, or `default deny`/`default allow`.
    pub rule: String,
}

impl Why {
    /// The admin API's answer.
    pub fn view(&self) -> mesh_proto::admin::WhyView {
        mesh_proto::admin::WhyView {
            action: self.decision.action,
            line: self.line,
            rule: self.rule.clone(),
        }
    }
}

/// A tag list checked: DNS labels, at most 32, sorted, no duplicates.
pub fn clean_tags(tags: &[String]) -> Result<BTreeSet<String>, Error> {
    if tags.len() > 32 {
        return Err(Error::Invalid(format!(
            "{} tags, at most 32 are allowed",
            tags.len()
        )));
    }
    let mut out = BTreeSet::new();
    for t in tags {
        let t = t.strip_prefix("tag:").unwrap_or(t);
        if !policy::is_label(t) {
            return Err(Error::Invalid(format!(
                "tag {t:?} is not a DNS label (a-z, 0-9, -; at most 63)"
            )));
        }
        out.insert(t.to_owned());
    }
    Ok(out)
}

impl Coordinator {
    /// The network's policy.
    pub async fn policy(&self, net: &str) -> Result<PolicyState, Error> {
        let st = self.state.lock().await;
        let ns = network(&st, net)?;
        Ok(PolicyState {
            document: ns.network.policy.clone(),
            policy: ns
                .policy
                .as_ref()
                .map_or_else(Policy::default, |(_, c)| (*c.policy).clone()),
        })
    }

    /// Checks `document` as [`Coordinator::set_policy`] would, without setting it.
    pub fn check_policy(document: &str) -> Result<Policy, Error> {
        Policy::parse(document).map_err(|e| Error::Invalid(format!("policy {e}")))
    }

    /// Sets (or with `None` removes) the network's policy; the document must parse and
    /// pass its own tests, else nothing changes.
    pub async fn set_policy(
        &self,
        net: &str,
        document: Option<String>,
    ) -> Result<PolicyState, Error> {
        let parsed = match &document {
            Some(d) => Some(Self::check_policy(d)?),
            None => None,
        };
        self.retrying(|| self.set_policy_once(net, &document))
            .await?;
        tracing::info!(network = %net, rules = parsed.as_ref().map_or(0, |p| p.rules.len()), "policy set");
        Ok(PolicyState {
            document,
            policy: parsed.unwrap_or_default(),
        })
    }

    async fn set_policy_once(&self, net: &str, document: &Option<String>) -> Result<(), Error> {
        {
            let mut st = self.state.lock().await;
            let ns = network(&st, net)?;
            if &ns.network.policy == document {
                return Ok(());
            }
            let detail = match document {
                Some(d) => format!("{} bytes", d.len()),
                None => "removed: everything allowed".to_owned(),
            };
            let audit = vec![self.audit_entry("policy.set", net, net, detail)];
            self.commit(
                &mut st,
                net,
                Change {
                    policy: Some(document.clone()),
                    audit,
                    ..Change::default()
                },
            )?;
        }
        self.durable().await?;
        Ok(())
    }

    /// Replaces member `node`'s tags.
    pub async fn set_tags(
        &self,
        net: &str,
        node: &str,
        tags: &[String],
    ) -> Result<mesh_proto::admin::MemberView, Error> {
        let tags = clean_tags(tags)?;
        self.edit_member(net, node, "tagged", |_, m| {
            m.tags.clone_from(&tags);
            let list: Vec<&str> = tags.iter().map(String::as_str).collect();
            Ok(vec![("member.tags", list.join(","))])
        })
        .await
    }

    /// Member `node`'s tags.
    pub async fn tags(&self, net: &str, node: &str) -> Result<BTreeSet<String>, Error> {
        let st = self.state.lock().await;
        let ns = network(&st, net)?;
        Ok(find_member(ns, node)?.tags.clone())
    }

    /// Which rule decides traffic from `from` to `to` on `port` (`tcp/22`, `icmp`): each a
    /// member (name, key or address, as the admin API matches them) or a description
    /// (`tag:a tag:b`), evaluated with the network's policy.
    pub async fn why(&self, net: &str, from: &str, to: &str, port: &str) -> Result<Why, Error> {
        let ports = policy::Ports::parse(port).map_err(Error::Invalid)?;
        let Some(proto) = ports
            .proto
            .filter(|p| *p == Proto::Icmp || ports.lo == ports.hi)
        else {
            return Err(Error::Invalid(format!(
                "{port:?}: name one protocol and port (tcp/22, udp/53, icmp)"
            )));
        };
        let st = self.state.lock().await;
        let ns = network(&st, net)?;
        let probe = |who: &str| -> Result<Probe, Error> {
            match find_member(ns, who) {
                Ok(m) => Ok(Probe {
                    tags: m.tags.clone(),
                    name: Some(m.name.clone()),
                    addr: Some(m.address),
                }),
                Err(_) => Probe::parse(who).map_err(|e| {
                    Error::Invalid(format!(
                        "{who:?} is neither a member nor a description: {e}"
                    ))
                }),
            }
        };
        let (f, t) = (probe(from)?, probe(to)?);
        let policy = ns
            .policy
            .as_ref()
            .map_or_else(Policy::default, |(_, c)| (*c.policy).clone());
        let port = if proto == Proto::Icmp { 0 } else { ports.lo };
        let decision = policy.decide_probe(&f, &t, proto, port);
        let rule = decision.rule.map(|i| &policy.rules[i]);
        Ok(Why {
            line: rule.map(|r| r.line),
            rule: rule.map_or_else(|| format!("default {}", policy.default), |r| r.summary()),
            decision,
        })
    }

    /// Records what member `key`'s session reported it enforces.
    pub(crate) fn report_filter(&self, net: &str, key: &Key, id: u64, report: FilterReport) {
        let mut sessions = self.sessions();
        if let Some(slot) = sessions
            .get_mut(&(net.to_owned(), *key))
            .filter(|s| s.id == id)
        {
            if slot.filter.as_ref() != Some(&report) {
                slot.filter = Some(report);
                self.changes.path_reported();
            }
        }
    }

    /// Records the hash of the filter member `key`'s session just sent it.
    pub(crate) fn filter_sent(&self, net: &str, key: &Key, id: u64, hash: &str) {
        let mut sessions = self.sessions();
        if let Some(slot) = sessions
            .get_mut(&(net.to_owned(), *key))
            .filter(|s| s.id == id)
        {
            if slot.filter_sent.as_deref() != Some(hash) {
                slot.filter_sent = Some(hash.to_owned());
                self.changes.path_reported();
            }
        }
    }

    /// What member `key` reported it enforces, if it is online and reported.
    pub fn filter_report(&self, net: &str, key: &Key) -> Option<FilterReport> {
        self.sessions()
            .get(&(net.to_owned(), *key))
            .and_then(|s| s.filter.clone())
    }
}

#[cfg(test)]
mod tests;
