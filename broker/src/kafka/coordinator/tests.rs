//! The coordinator as a state machine: requests in, answers out, time passed in by the test.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot::{self, error::TryRecvError};
use tokio::time::Instant;

use super::*;

const SESSION: Duration = Duration::from_secs(10);
const REBALANCE: Duration = Duration::from_secs(30);

fn limits() -> Limits {
    Limits {
        min_session_timeout: Duration::from_secs(1),
        max_session_timeout: Duration::from_secs(60),
        initial_rebalance_delay: Duration::ZERO,
        max_groups: 10,
        max_members: 10,
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn join_request(group: &str, member: &str) -> JoinRequest {
    JoinRequest {
        group_id: group.to_string(),
        member_id: member.to_string(),
        client_id: "client".to_string(),
        client_host: "/127.0.0.1".to_string(),
        session_timeout: SESSION,
        rebalance_timeout: REBALANCE,
        protocol_type: "consumer".to_string(),
        protocols: vec![Protocol {
            name: "range".to_string(),
            metadata: Bytes::from_static(b"topics"),
        }],
        require_known_member_id: false,
    }
}

fn sync_request(
    group: &str,
    member: &str,
    generation: i32,
    assignments: &[(&str, &str)],
) -> SyncRequest {
    SyncRequest {
        group_id: group.to_string(),
        member_id: member.to_string(),
        generation,
        protocol_type: None,
        protocol: None,
        assignments: assignments
            .iter()
            .map(|(m, a)| (m.to_string(), Bytes::copy_from_slice(a.as_bytes())))
            .collect(),
    }
}

type Answer<T> = oneshot::Receiver<Result<T, GroupError>>;

fn now<T: std::fmt::Debug>(reply: Reply<T>) -> Result<T, GroupError> {
    match reply {
        Reply::Ready(outcome) => outcome,
        Reply::Waiting(_) => panic!("expected an answer at once"),
    }
}

fn waits<T: std::fmt::Debug>(reply: Reply<T>) -> Answer<T> {
    match reply {
        Reply::Waiting(answer) => answer,
        Reply::Ready(outcome) => panic!("expected to wait, got {outcome:?}"),
    }
}

fn answered<T: std::fmt::Debug>(answer: &mut Answer<T>) -> Result<T, GroupError> {
    answer
        .try_recv()
        .expect("the waiting request has been answered")
}

fn still_waiting<T: std::fmt::Debug>(answer: &mut Answer<T>) {
    assert!(
        matches!(answer.try_recv(), Err(TryRecvError::Empty)),
        "expected the request to still wait"
    );
}

/// A new member joins `group` alone and gets generation `generation` as leader.
fn join_alone(c: &mut Coordinator, group: &str, at: Instant) -> Joined {
    let mut answer = waits(c.join(join_request(group, ""), at));
    answered(&mut answer).unwrap()
}

/// Members `a` and `b` in a stable group at generation 2, `a` leading; returns their ids.
fn two_stable(c: &mut Coordinator, at: Instant) -> (String, String) {
    let a = join_alone(c, "g", at).member_id;
    answered(&mut waits(
        c.sync(sync_request("g", &a, 1, &[(a.as_str(), "all")]), at),
    ))
    .unwrap();
    let mut b_joined = waits(c.join(join_request("g", ""), at));
    let mut a_joined = waits(c.join(join_request("g", &a), at));
    let b = answered(&mut b_joined).unwrap().member_id;
    assert_eq!(answered(&mut a_joined).unwrap().generation, 2);
    let mut b_synced = waits(c.sync(sync_request("g", &b, 2, &[]), at));
    answered(&mut waits(c.sync(
        sync_request("g", &a, 2, &[(a.as_str(), "A"), (b.as_str(), "B")]),
        at,
    )))
    .unwrap();
    answered(&mut b_synced).unwrap();
    (a, b)
}

fn code<T>(outcome: Result<T, GroupError>) -> i16 {
    outcome.err().map_or(0, |e| e.code())
}

#[test]
fn a_lone_member_joins_leads_syncs_and_heartbeats() {
    let mut c = Coordinator::new(limits());
    let t0 = Instant::now();
    let joined = join_alone(&mut c, "g", t0);
    assert_eq!(
        (
            joined.generation,
            joined.protocol.as_str(),
            joined.protocol_type.as_str()
        ),
        (1, "range", "consumer")
    );
    assert!(joined.member_id.starts_with("client-"));
    assert_eq!(joined.leader, joined.member_id);
    assert_eq!(
        joined.members,
        vec![(joined.member_id.clone(), Bytes::from_static(b"topics"))]
    );
    let me = joined.member_id;
    let synced = answered(&mut waits(
        c.sync(sync_request("g", &me, 1, &[(me.as_str(), "p0,p1")]), t0),
    ))
    .unwrap();
    assert_eq!(synced.assignment, Bytes::from_static(b"p0,p1"));
    assert_eq!(c.heartbeat("g", &me, 1, t0 + secs(5)), Ok(()));
    let described = c.describe("g").unwrap();
    assert_eq!(
        (described.state, described.protocol.as_str()),
        (State::Stable, "range")
    );
    assert_eq!(
        described.members[0].assignment,
        Bytes::from_static(b"p0,p1")
    );
    assert_eq!(
        c.list(),
        vec![Listing {
            group_id: "g".into(),
            protocol_type: "consumer".into(),
            state: State::Stable
        }]
    );
}

#[test]
fn a_new_member_rebalances_the_group_and_the_leader_assigns_everyone() {
    let mut c = Coordinator::new(limits());
    let t0 = Instant::now();
    let a = join_alone(&mut c, "g", t0).member_id;
    answered(&mut waits(
        c.sync(sync_request("g", &a, 1, &[(a.as_str(), "all")]), t0),
    ))
    .unwrap();

    let mut b_joined = waits(c.join(join_request("g", ""), t0 + secs(1)));
    still_waiting(&mut b_joined);
    assert_eq!(
        code(c.heartbeat("g", &a, 1, t0 + secs(2))),
        27,
        "REBALANCE_IN_PROGRESS tells the member to rejoin"
    );
    assert_eq!(
        code(now(c.sync(sync_request("g", &a, 1, &[]), t0 + secs(2)))),
        27
    );
    let mut a_joined = waits(c.join(join_request("g", &a), t0 + secs(3)));
    let leader = answered(&mut a_joined).unwrap();
    let follower = answered(&mut b_joined).unwrap();
    let b = follower.member_id.clone();
    assert_eq!((leader.generation, follower.generation), (2, 2));
    assert_eq!(
        (leader.leader.as_str(), follower.leader.as_str()),
        (a.as_str(), a.as_str()),
        "the longest-standing member leads"
    );
    assert_eq!(
        leader.members.len(),
        2,
        "the leader gets every member's metadata"
    );
    assert!(follower.members.is_empty());

    let mut b_synced = waits(c.sync(sync_request("g", &b, 2, &[]), t0 + secs(4)));
    still_waiting(&mut b_synced);
    assert_eq!(
        c.heartbeat("g", &b, 2, t0 + secs(4)),
        Ok(()),
        "heartbeats while the leader assigns are fine"
    );
    let a_synced = answered(&mut waits(c.sync(
        sync_request("g", &a, 2, &[(a.as_str(), "A"), (b.as_str(), "B")]),
        t0 + secs(5),
    )))
    .unwrap();
    assert_eq!(a_synced.assignment, Bytes::from_static(b"A"));
    assert_eq!(
        answered(&mut b_synced).unwrap().assignment,
        Bytes::from_static(b"B")
    );
    assert_eq!(c.heartbeat("g", &b, 2, t0 + secs(6)), Ok(()));
    assert_eq!(
        code(c.heartbeat("g", &b, 1, t0 + secs(6))),
        22,
        "ILLEGAL_GENERATION"
    );
    let late = now(c.sync(sync_request("g", &b, 2, &[]), t0 + secs(7))).unwrap();
    assert_eq!(
        late.assignment,
        Bytes::from_static(b"B"),
        "a stable group answers a sync at once"
    );
}

#[test]
fn a_member_that_stops_heartbeating_expires_after_its_session_timeout() {
    let mut c = Coordinator::new(limits());
    let t0 = Instant::now();
    let (a, b) = two_stable(&mut c, t0);
    assert_eq!(c.heartbeat("g", &a, 2, t0 + secs(8)), Ok(()));
    assert_eq!(c.next_deadline(), Some(t0 + SESSION), "b is due first");
    c.tick(t0 + SESSION - Duration::from_millis(1));
    assert_eq!(
        c.heartbeat("g", &b, 2, t0 + secs(9)),
        Ok(()),
        "not expired a moment before its timeout"
    );
    assert_eq!(c.heartbeat("g", &a, 2, t0 + secs(12)), Ok(()));
    c.tick(t0 + secs(9) + SESSION);
    assert_eq!(
        code(c.heartbeat("g", &b, 2, t0 + secs(20))),
        25,
        "UNKNOWN_MEMBER_ID once expired"
    );
    assert_eq!(
        code(c.heartbeat("g", &a, 2, t0 + secs(20))),
        27,
        "the survivor is told to rejoin"
    );
    let rejoined = answered(&mut waits(c.join(join_request("g", &a), t0 + secs(21)))).unwrap();
    assert_eq!((rejoined.generation, rejoined.members.len()), (3, 1));
    assert_eq!(
        code(now(c.sync(sync_request("g", &b, 2, &[]), t0 + secs(21)))),
        25
    );
    answered(&mut waits(
        c.sync(sync_request("g", &a, 3, &[]), t0 + secs(21)),
    ))
    .unwrap();
    c.tick(t0 + secs(21) + SESSION);
    assert!(
        c.describe("g").is_none(),
        "the last member expired too: the group is gone"
    );
}

#[test]
fn members_that_do_not_rejoin_are_dropped_at_the_rebalance_timeout() {
    let mut c = Coordinator::new(limits());
    let t0 = Instant::now();
    let (a, b) = two_stable(&mut c, t0);
    let mut c_joined = waits(c.join(join_request("g", ""), t0));
    let mut a_joined = waits(c.join(join_request("g", &a), t0 + secs(1)));
    for t in [9, 18, 27] {
        assert_eq!(
            code(c.heartbeat("g", &b, 2, t0 + secs(t))),
            27,
            "b is alive but does not rejoin"
        );
        c.tick(t0 + secs(t));
    }
    still_waiting(&mut a_joined);
    assert_eq!(c.next_deadline(), Some(t0 + REBALANCE));
    c.tick(t0 + REBALANCE);
    let leader = answered(&mut a_joined).unwrap();
    assert_eq!((leader.generation, leader.members.len()), (3, 2));
    assert_eq!(answered(&mut c_joined).unwrap().generation, 3);
    assert_eq!(code(c.heartbeat("g", &b, 2, t0 + secs(31))), 25);
}

#[test]
fn joining_v4_first_hands_out_a_member_id_that_expires_unless_used() {
    let mut c = Coordinator::new(limits());
    let t0 = Instant::now();
    let known = JoinRequest {
        require_known_member_id: true,
        ..join_request("g", "")
    };
    let Err(GroupError::MemberIdRequired { member }) = now(c.join(known, t0)) else {
        panic!("MEMBER_ID_REQUIRED expected")
    };
    assert_eq!(
        GroupError::MemberIdRequired {
            member: member.clone()
        }
        .code(),
        79
    );
    let joined = answered(&mut waits(c.join(join_request("g", &member), t0 + secs(1)))).unwrap();
    assert_eq!((joined.member_id, joined.generation), (member.clone(), 1));

    let Err(GroupError::MemberIdRequired { member: unused }) = now(c.join(
        JoinRequest {
            require_known_member_id: true,
            ..join_request("g", "")
        },
        t0 + secs(2),
    )) else {
        panic!("MEMBER_ID_REQUIRED expected")
    };
    assert_eq!(c.heartbeat("g", &member, 1, t0 + secs(11)), Ok(()));
    c.tick(t0 + secs(2) + SESSION);
    assert_eq!(
        code(now(c.join(join_request("g", &unused), t0 + secs(13)))),
        25,
        "the unused id expired"
    );
}

#[test]
fn leaving_rebalances_the_rest_and_the_last_one_out_removes_the_group() {
    let mut c = Coordinator::new(limits());
    let t0 = Instant::now();
    let (a, b) = two_stable(&mut c, t0);
    assert_eq!(c.leave("g", &b, t0 + secs(1)), Ok(()));
    assert_eq!(code(c.leave("g", &b, t0 + secs(1))), 25);
    assert_eq!(code(c.heartbeat("g", &a, 2, t0 + secs(2))), 27);
    let alone = answered(&mut waits(c.join(join_request("g", &a), t0 + secs(3)))).unwrap();
    assert_eq!(
        (alone.generation, alone.members.len()),
        (3, 1),
        "the rebalance completes as soon as the rest rejoined"
    );
    assert_eq!(c.leave("g", &a, t0 + secs(4)), Ok(()));
    assert!(c.describe("g").is_none());
    assert!(c.list().is_empty());
    assert_eq!(c.next_deadline(), None);
}

#[test]
fn a_rebalance_during_the_sync_answers_the_waiting_followers() {
    let mut c = Coordinator::new(limits());
    let t0 = Instant::now();
    let a = join_alone(&mut c, "g", t0).member_id;
    answered(&mut waits(c.sync(sync_request("g", &a, 1, &[]), t0))).unwrap();
    let mut b_joined = waits(c.join(join_request("g", ""), t0));
    answered(&mut waits(c.join(join_request("g", &a), t0))).unwrap();
    let b = answered(&mut b_joined).unwrap().member_id;
    let mut b_synced = waits(c.sync(sync_request("g", &b, 2, &[]), t0 + secs(1)));
    assert_eq!(
        c.leave("g", &a, t0 + secs(2)),
        Ok(()),
        "the leader leaves before assigning"
    );
    assert_eq!(code(answered(&mut b_synced)), 27);
    let alone = answered(&mut waits(c.join(join_request("g", &b), t0 + secs(3)))).unwrap();
    assert_eq!((alone.generation, alone.leader), (3, b));
}

#[test]
fn limits_and_mismatched_protocols_are_refused_with_kafka_codes() {
    let mut c = Coordinator::new(Limits {
        max_groups: 1,
        max_members: 2,
        ..limits()
    });
    let t0 = Instant::now();
    let short = JoinRequest {
        session_timeout: Duration::from_millis(500),
        ..join_request("g", "")
    };
    let refused = now(c.join(short, t0)).unwrap_err();
    assert_eq!(refused.code(), 26, "INVALID_SESSION_TIMEOUT");
    assert!(
        refused
            .to_string()
            .contains("broker.group_min_session_timeout"),
        "{refused}"
    );
    assert_eq!(
        code(now(c.join(join_request("", ""), t0))),
        24,
        "INVALID_GROUP_ID"
    );
    assert_eq!(
        code(now(c.join(join_request("g", "ghost"), t0))),
        25,
        "a member id for a group that does not exist"
    );

    let (_, _) = two_stable(&mut c, t0);
    let full = now(c.join(join_request("g", ""), t0)).unwrap_err();
    assert_eq!(full.code(), 81, "GROUP_MAX_SIZE_REACHED");
    assert!(
        full.to_string().contains("broker.max_group_members = 2"),
        "{full}"
    );
    let too_many = now(c.join(join_request("other", ""), t0)).unwrap_err();
    assert_eq!(too_many.code(), 44, "POLICY_VIOLATION");
    assert!(
        too_many.to_string().contains("broker.max_groups = 1"),
        "{too_many}"
    );

    let mut c = Coordinator::new(limits());
    let a = join_alone(&mut c, "g", t0).member_id;
    let connect = JoinRequest {
        protocol_type: "connect".into(),
        ..join_request("g", "")
    };
    assert_eq!(
        code(now(c.join(connect, t0))),
        23,
        "INCONSISTENT_GROUP_PROTOCOL"
    );
    let other = JoinRequest {
        protocols: vec![Protocol {
            name: "roundrobin".into(),
            metadata: Bytes::new(),
        }],
        ..join_request("g", "")
    };
    assert_eq!(code(now(c.join(other, t0))), 23);
    let empty = JoinRequest {
        protocols: Vec::new(),
        ..join_request("fresh", "")
    };
    assert_eq!(code(now(c.join(empty, t0))), 23);
    assert!(
        c.describe("fresh").is_none(),
        "a refused first join leaves no group behind"
    );
    let typed = SyncRequest {
        protocol: Some("roundrobin".into()),
        ..sync_request("g", &a, 1, &[])
    };
    assert_eq!(
        code(now(c.sync(typed, t0))),
        23,
        "SyncGroup v5 protocol names are checked"
    );
}

#[test]
fn the_first_rebalance_waits_the_initial_delay_for_more_members() {
    let mut c = Coordinator::new(Limits {
        initial_rebalance_delay: secs(3),
        ..limits()
    });
    let t0 = Instant::now();
    let mut a_joined = waits(c.join(join_request("g", ""), t0));
    c.tick(t0 + secs(1));
    still_waiting(&mut a_joined);
    let mut b_joined = waits(c.join(join_request("g", ""), t0 + secs(2)));
    c.tick(t0 + secs(3));
    still_waiting(&mut a_joined);
    assert_eq!(
        c.next_deadline(),
        Some(t0 + secs(5)),
        "each new member extends the delay"
    );
    c.tick(t0 + secs(5));
    let (a, b) = (
        answered(&mut a_joined).unwrap(),
        answered(&mut b_joined).unwrap(),
    );
    assert_eq!(
        (a.generation, b.generation),
        (1, 1),
        "both are in the first generation"
    );
    assert_eq!(a.members.len() + b.members.len(), 2);
}

#[test]
fn closing_answers_every_waiting_request_not_coordinator() {
    let mut c = Coordinator::new(limits());
    let t0 = Instant::now();
    let a = join_alone(&mut c, "g", t0).member_id;
    answered(&mut waits(c.sync(sync_request("g", &a, 1, &[]), t0))).unwrap();
    let mut b_joined = waits(c.join(join_request("g", ""), t0));
    c.close();
    assert_eq!(code(answered(&mut b_joined)), 16, "NOT_COORDINATOR");
    assert_eq!(code(now(c.join(join_request("g", ""), t0))), 16);
    assert_eq!(code(c.heartbeat("g", &a, 1, t0)), 16);
}

#[test]
fn offset_commits_are_checked_against_the_membership() {
    let mut c = Coordinator::new(limits());
    let t0 = Instant::now();
    assert_eq!(
        c.check_commit("solo", "", -1, t0),
        Ok(()),
        "commits outside group management are allowed"
    );
    assert_eq!(
        code(c.check_commit("solo", "m", 3, t0)),
        22,
        "a generation of a group that does not exist"
    );
    let (a, b) = two_stable(&mut c, t0);
    assert_eq!(c.check_commit("g", &a, 2, t0), Ok(()));
    assert_eq!(code(c.check_commit("g", &a, 1, t0)), 22);
    assert_eq!(code(c.check_commit("g", "ghost", 2, t0)), 25);
    assert_eq!(
        code(c.check_commit("g", "", -1, t0)),
        25,
        "a group with members needs a member"
    );
    let _c_joined = waits(c.join(join_request("g", ""), t0));
    assert_eq!(
        c.check_commit("g", &b, 2, t0),
        Ok(()),
        "members may commit while rejoining"
    );
    let _a_joined = waits(c.join(join_request("g", &a), t0));
    let _b_joined = waits(c.join(join_request("g", &b), t0));
    assert_eq!(
        code(c.check_commit("g", &a, 3, t0)),
        27,
        "not while the leader assigns"
    );
}
