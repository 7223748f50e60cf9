//! The admin-visible generation: one number that moves whenever anything the admin API
//! shows (and so the dashboard) changes. The dashboard's change feed ([`crate::admin::web`])
//! reads it once a second per client: an atomic load or two, however many members.
//!
//! It is the sum of three counts that only grow, so it moves when any of them does:
//! - store batches (`Coordinator::applied`): every change to a network, a member (its
//!   last-seen time and endpoints included), a token or the audit log is one;
//! - [`Changes::bump`]s, for what lives in memory only: a session registered or gone (a
//!   member's online state);
//! - path reports, folded in at most once per second of the coordinator's clock: nodes
//!   report paths often, so 10 000 members reporting move it once a second, not 10 000
//!   times. No report is lost: the first read in a later second takes it in.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Coordinator;

/// The in-memory part of [`Coordinator::generation`].
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// Sessions registered and gone.
    bumps: AtomicU64,
    /// Path reports that changed what a member shows.
    path_reports: AtomicU64,
    /// `path_reports` as of the last fold.
    paths_shown: AtomicU64,
    /// The clock second of the last fold.
    paths_at: AtomicU64,
}

impl Changes {
    /// Something the admin sees changed in memory (a member went online or offline).
    pub(crate) fn bump(&self) {
        self.bumps.fetch_add(1, Ordering::SeqCst);
    }

    /// A member's reported paths changed.
    pub(super) fn path_reported(&self) {
        self.path_reports.fetch_add(1, Ordering::SeqCst);
    }
}

impl Coordinator {
    /// A number that moves whenever what the admin API shows changed (networks, members,
    /// online state, reported paths, tokens, the audit log), and stays put otherwise; path
    /// reports move it at most once per second. Only for comparing with an earlier value.
    pub fn generation(&self) -> u64 {
        let c = &self.changes;
        let now = self.now();
        if c.paths_at.swap(now, Ordering::SeqCst) != now {
            c.paths_shown
                .fetch_max(c.path_reports.load(Ordering::SeqCst), Ordering::SeqCst);
        }
        self.applied
            .load(Ordering::SeqCst)
            .wrapping_add(c.bumps.load(Ordering::SeqCst))
            .wrapping_add(c.paths_shown.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use mesh_proto::admin::UpdateMember;
    use mesh_proto::control::{PeerPathReport, ReportedPath};

    use crate::testutil::{hello, private, remote, Harness};

    /// Asserts the generation moved since `before`; answers the new one.
    #[track_caller]
    fn moved(h: &Harness, before: u64, what: &str) -> u64 {
        let now = h.coord.generation();
        assert_ne!(now, before, "{what} did not move the generation");
        now
    }

    #[tokio::test]
    async fn the_generation_moves_with_what_the_admin_sees_and_only_then() {
        let h = Harness::new();
        let g = h.coord.generation();
        // Idle: reading it, and time passing, change nothing.
        assert_eq!(h.coord.generation(), g);
        h.clock.advance(10);
        assert_eq!(h.coord.generation(), g);

        h.network("lab").await;
        let g = moved(&h, g, "creating a network");
        let token = h.token("lab", true, None).await;
        let g = moved(&h, g, "creating a token");
        h.coord
            .admit(&hello("lab", &private(1), Some(token.clone())), remote(1))
            .await
            .unwrap();
        let g = moved(&h, g, "a member joining");
        h.coord
            .admit(&hello("lab", &private(2), Some(token)), remote(2))
            .await
            .unwrap();
        let g = moved(&h, g, "another member joining");
        let rename = UpdateMember {
            name: Some("db".into()),
            ..UpdateMember::default()
        };
        h.coord
            .update_member("lab", "node-2", rename)
            .await
            .unwrap();
        let g = moved(&h, g, "a rename");
        h.coord.deauthorize("lab", "db").await.unwrap();
        let g = moved(&h, g, "a deauthorisation");
        h.coord.authorize("lab", "db").await.unwrap();
        let g = moved(&h, g, "an authorisation");

        // Online and offline.
        let key = |seed: u8| private(seed).public_key();
        let session = h.coord.register_session("lab", &key(1));
        let g = moved(&h, g, "a member coming online");
        assert_eq!(h.coord.generation(), g);

        // Path reports: in the first read of a second, not again in that second, and the
        // one held back in the next.
        let report = |path, rtt_ms| {
            [PeerPathReport {
                peer: key(2),
                path,
                rtt_ms,
            }]
        };
        let direct = report(ReportedPath::Direct, Some(3));
        assert_eq!(h.coord.report_paths(&session, &direct).await, Ok(1));
        h.clock.advance(1);
        let g = moved(&h, g, "a path report");
        let relayed = report(ReportedPath::Relayed, None);
        assert_eq!(h.coord.report_paths(&session, &relayed).await, Ok(1));
        assert_eq!(h.coord.generation(), g, "two path folds in one second");
        h.clock.advance(1);
        let g = moved(&h, g, "the report held back");
        // The same paths again change nothing.
        assert_eq!(h.coord.report_paths(&session, &relayed).await, Ok(1));
        h.clock.advance(1);
        assert_eq!(h.coord.generation(), g);

        drop(session);
        let g = moved(&h, g, "a member going offline");
        h.coord.delete_network("lab").await.unwrap();
        let g = moved(&h, g, "deleting a network");
        h.clock.advance(60);
        assert_eq!(h.coord.generation(), g);
    }
}
