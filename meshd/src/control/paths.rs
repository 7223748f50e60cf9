//! When a node reports its peer paths to the coordinator ([`ClientMsg::Paths`]): the policy
//! of `mesh_proto::control`'s "Path reports" as a small state machine. Time is passed in,
//! so it is tested without a runtime.
//!
//! [`ClientMsg::Paths`]: mesh_proto::control::ClientMsg::Paths

use std::time::Instant;

use mesh_proto::control::{PeerPathReport, PATH_REPORT_INTERVAL, PATH_RTT_REFRESH};

/// What was last reported on this connection, and when.
#[derive(Debug, Default)]
pub struct PathReporter {
    /// The last report sent (`None`: none since the connection was authorised).
    sent: Option<Vec<PeerPathReport>>,
    /// When it was sent.
    sent_at: Option<Instant>,
}

impl PathReporter {
    /// Forgets what was sent: the next [`PathReporter::poll`] reports (after the node was
    /// told it is pending, the coordinator shows no paths for it).
    pub fn reset(&mut self) {
        *self = PathReporter::default();
    }

    /// The report to send now, given the paths now (ordered by key, as
    /// `Device::path_report` gives them): the first one, one whose (peer, path) set
    /// changed, or one whose RTTs changed [`PATH_RTT_REFRESH`] after the last report; never
    /// two within [`PATH_REPORT_INTERVAL`].
    pub fn poll(
        &mut self,
        now: Instant,
        current: Vec<PeerPathReport>,
    ) -> Option<Vec<PeerPathReport>> {
        let since = self.sent_at.map(|at| now.saturating_duration_since(at));
        if since.is_some_and(|s| s < PATH_REPORT_INTERVAL) {
            return None;
        }
        let due = match &self.sent {
            None => true,
            Some(old) if !same_paths(old, &current) => true,
            Some(old) => *old != current && since.is_some_and(|s| s >= PATH_RTT_REFRESH),
        };
        if !due {
            return None;
        }
        self.sent = Some(current.clone());
        self.sent_at = Some(now);
        Some(current)
    }
}

/// Whether two reports name the same peers with the same paths (RTTs aside).
fn same_paths(a: &[PeerPathReport], b: &[PeerPathReport]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.peer == y.peer && x.path == y.path)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mesh_proto::control::ReportedPath;
    use mesh_proto::Key;

    use super::*;

    fn entry(seed: u8, path: ReportedPath, rtt_ms: Option<u32>) -> PeerPathReport {
        PeerPathReport {
            peer: Key([seed; 32]),
            path,
            rtt_ms,
        }
    }

    #[test]
    fn reports_changes_debounced_and_rtts_rarely() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let direct = |rtt| vec![entry(1, ReportedPath::Direct, Some(rtt))];
        let relayed = vec![entry(1, ReportedPath::Relayed, None)];
        let mut r = PathReporter::default();

        // The first report goes at once, even an empty one.
        assert_eq!(r.poll(at(0), vec![]), Some(vec![]));
        // A new peer: a change, but not within a second of the last report.
        assert_eq!(r.poll(at(500), direct(5)), None);
        assert_eq!(r.poll(at(1000), direct(5)), Some(direct(5)));
        // Same paths: nothing, also when only the RTT moved (until 30 s have passed).
        assert_eq!(r.poll(at(5000), direct(5)), None);
        assert_eq!(r.poll(at(20_000), direct(9)), None);
        assert_eq!(r.poll(at(31_000), direct(9)), Some(direct(9)));
        assert_eq!(r.poll(at(62_000), direct(9)), None);
        // A path change goes as soon as a second has passed.
        assert_eq!(r.poll(at(62_500), relayed.clone()), Some(relayed.clone()));
        assert_eq!(r.poll(at(62_600), direct(3)), None);
        assert_eq!(r.poll(at(63_500), direct(3)), Some(direct(3)));
        // A peer gone is a change.
        assert_eq!(r.poll(at(65_000), vec![]), Some(vec![]));
        // After a reset (re-authorised), the next poll reports again.
        r.reset();
        assert_eq!(r.poll(at(65_100), vec![]), Some(vec![]));
    }

    #[test]
    fn same_paths_ignores_rtts_only() {
        let a = vec![
            entry(1, ReportedPath::Direct, Some(1)),
            entry(2, ReportedPath::None, None),
        ];
        let mut b = a.clone();
        b[0].rtt_ms = Some(40);
        assert!(same_paths(&a, &b));
        b[1].path = ReportedPath::Relayed;
        assert!(!same_paths(&a, &b));
        assert!(!same_paths(&a, &a[..1]));
    }
}
