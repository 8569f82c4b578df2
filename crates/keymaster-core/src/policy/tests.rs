//! Tests of the policy as a whole: validation errors of [`Policy::from_input`], table-driven
//! cases of [`decide`] for every rule and their order, and property tests.

use std::net::IpAddr;

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::wire::{PolicyInput, RetrievalContext};

/// Monday 2025-01-06 12:00 UTC.
fn now() -> Timestamp {
    "2025-01-06T12:00:00Z".parse().unwrap()
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn input(value: serde_json::Value) -> PolicyInput {
    serde_json::from_value(value).unwrap()
}

fn policy(value: serde_json::Value) -> Policy {
    Policy::from_input(&input(value), now(), &PolicyLimits::default())
        .unwrap()
        .0
}

fn error(value: serde_json::Value) -> PolicyError {
    Policy::from_input(&input(value), now(), &PolicyLimits::default()).unwrap_err()
}

/// Facts of a fresh key that expires in an hour.
fn fresh() -> KeyFacts {
    KeyFacts {
        expires_at: now() + SignedDuration::from_hours(1),
        retrievals: 0,
        failed_password_attempts: 0,
        locked: false,
        pending: None,
        origin_network: None,
    }
}

/// An owned [`Requester`].
#[derive(Clone, Debug)]
struct Req {
    service_id: String,
    domains: Vec<String>,
    ip: IpAddr,
    context: Option<RetrievalContext>,
    password: PasswordCheck,
}

impl Req {
    fn get(&self) -> Requester<'_> {
        Requester {
            service_id: &self.service_id,
            service_domains: &self.domains,
            source_ip: self.ip,
            context: self.context.as_ref(),
            password: self.password,
        }
    }
}

/// Service `svc_a`, enrolled as `app.example.com`, from 203.0.113.7, in Berlin, no password.
fn req() -> Req {
    Req {
        service_id: "svc_a".into(),
        domains: vec!["app.example.com".into()],
        ip: "203.0.113.7".parse().unwrap(),
        context: Some(RetrievalContext {
            ip: None,
            latitude: Some(52.52),
            longitude: Some(13.405),
            country: Some("DE".into()),
        }),
        password: PasswordCheck::NotGiven,
    }
}

fn pending(service: &str, confirm_by: Timestamp) -> Option<Pending> {
    Some(Pending {
        retrieval_id: "ret_1".into(),
        service_id: service.into(),
        confirm_by,
    })
}

fn deny(d: Denial) -> Decision {
    Decision::Deny(d)
}

struct Case {
    name: &'static str,
    policy: serde_json::Value,
    facts: KeyFacts,
    req: Req,
    now: Timestamp,
    want: Decision,
}

fn case(name: &'static str, policy: serde_json::Value, want: Decision) -> Case {
    Case {
        name,
        policy,
        facts: fresh(),
        req: req(),
        now: now(),
        want,
    }
}

fn run(cases: Vec<Case>) {
    for c in cases {
        let p = policy(c.policy.clone());
        let got = decide(&p, &c.facts, &c.req.get(), c.now);
        assert_eq!(got, c.want, "case `{}`", c.name);
    }
}

#[test]
fn validation_errors_name_the_field() {
    let cases = [
        (json!({"ttl_seconds": 59}), "policy.ttl_seconds"),
        (json!({"ttl_seconds": 30 * 86400 + 1}), "policy.ttl_seconds"),
        (json!({"ttl_seconds": -1}), "policy.ttl_seconds"),
        (json!({"ttl_seconds": i64::MAX}), "policy.ttl_seconds"),
        (
            json!({"expires_at": "2025-01-06T12:00:30Z"}),
            "policy.expires_at",
        ),
        (
            json!({"expires_at": "2025-02-06T12:00:00Z"}),
            "policy.expires_at",
        ),
        (
            json!({"expires_at": "2025-01-01T12:00:00Z"}),
            "policy.expires_at",
        ),
        (
            json!({"ttl_seconds": 3600, "expires_at": "2025-01-06T14:00:00Z"}),
            "policy.expires_at",
        ),
        (json!({"max_retrievals": 0}), "policy.max_retrievals"),
        (json!({"max_retrievals": 101}), "policy.max_retrievals"),
        (json!({"password": ""}), "policy.password"),
        (json!({"password": "x".repeat(1025)}), "policy.password"),
        (json!({"services": []}), "policy.services"),
        (json!({"services": ["svc_a", ""]}), "policy.services[1]"),
        (json!({"domains": []}), "policy.domains"),
        (
            json!({"domains": ["ok.com", "bad_domain.com"]}),
            "policy.domains[1]",
        ),
        (json!({"fetcher_cidrs": []}), "policy.fetcher_cidrs"),
        (
            json!({"fetcher_cidrs": ["10.0.0.0/8", "10.0.0.0/33"]}),
            "policy.fetcher_cidrs[1]",
        ),
        (
            json!({"fetcher_cidrs": ["not-an-ip"]}),
            "policy.fetcher_cidrs[0]",
        ),
        (
            json!({"time_window": {"timezone": "Europe/Atlantis", "start": "08:00", "end": "18:00"}}),
            "policy.time_window.timezone",
        ),
        (
            json!({"time_window": {"timezone": "UTC", "start": "8:00", "end": "18:00"}}),
            "policy.time_window.start",
        ),
        (
            json!({"time_window": {"timezone": "UTC", "start": "08:00", "end": "24:00"}}),
            "policy.time_window.end",
        ),
        (
            json!({"time_window": {"timezone": "UTC", "start": "08:00", "end": "08:00"}}),
            "policy.time_window.end",
        ),
        (
            json!({"time_window": {"timezone": "UTC", "days": ["mon", "holiday"], "start": "08:00", "end": "18:00"}}),
            "policy.time_window.days[1]",
        ),
        (
            json!({"time_window": {"timezone": "UTC", "days": ["mon", "mon"], "start": "08:00", "end": "18:00"}}),
            "policy.time_window.days[1]",
        ),
        (
            json!({"geo": {"latitude": 1.0, "longitude": 1.0, "radius_km": 0.0}}),
            "policy.geo.radius_km",
        ),
        (
            json!({"geo": {"latitude": 1.0, "longitude": 1.0, "radius_km": -3.0}}),
            "policy.geo.radius_km",
        ),
        (
            json!({"geo": {"latitude": 95.0, "longitude": 1.0, "radius_km": 3.0}}),
            "policy.geo.latitude",
        ),
        (
            json!({"geo": {"latitude": 1.0, "longitude": 1.0}}),
            "policy.geo.radius_km",
        ),
        (json!({"geo": {}}), "policy.geo.countries"),
        (
            json!({"geo": {"countries": ["Germany"]}}),
            "policy.geo.countries[0]",
        ),
        (
            json!({"confirm_grace_seconds": 0}),
            "policy.confirm_grace_seconds",
        ),
        (
            json!({"confirm_grace_seconds": 86401}),
            "policy.confirm_grace_seconds",
        ),
    ];
    for (value, field) in cases {
        let err = error(value.clone());
        assert_eq!(err.field, field, "{value}: {err}");
        assert!(err.to_string().starts_with(field), "{err}");
    }
}

#[test]
fn password_is_never_in_an_error() {
    let secret = "hunter2".repeat(200);
    let err = error(json!({"password": secret}));
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn unknown_fields_are_refused_by_the_wire_type() {
    assert!(serde_json::from_value::<PolicyInput>(json!({"max_retrieval": 2})).is_err());
}

#[test]
fn defaults_and_normalisation() {
    let (p, expires) =
        Policy::from_input(&PolicyInput::default(), now(), &PolicyLimits::default()).unwrap();
    assert_eq!(expires, now() + SignedDuration::from_hours(24));
    assert_eq!(
        p,
        Policy {
            max_retrievals: 1,
            has_password: false,
            services: None,
            domains: None,
            fetcher_cidrs: None,
            time_window: None,
            geo: None,
            proximity: None,
            require_confirmation: false,
            confirm_grace_seconds: 300,
        }
    );
    let p = policy(json!({
        "max_retrievals": 100, "password": "pw", "require_confirmation": true,
        "confirm_grace_seconds": 60, "domains": ["Example.COM."],
        "fetcher_cidrs": ["10.1.2.3/8", "2001:db8::1"], "geo": {"countries": ["de"]}
    }));
    assert_eq!(p.max_retrievals, 100);
    assert!(p.has_password);
    assert!(p.require_confirmation);
    assert_eq!(p.confirm_grace_seconds, 60);
    assert_eq!(p.domains.as_deref(), Some(&["example.com".to_owned()][..]));
    let nets: Vec<String> = p
        .fetcher_cidrs
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["10.0.0.0/8", "2001:db8::1/128"]);
    assert_eq!(p.geo.unwrap().countries().unwrap(), ["DE"]);
}

#[test]
fn expiry_resolution() {
    let limits = PolicyLimits::default();
    let n = now();
    assert_eq!(
        resolve_expiry(Some(60), None, n, &limits).unwrap(),
        n + SignedDuration::from_secs(60)
    );
    assert_eq!(
        resolve_expiry(Some(30 * 86400), None, n, &limits).unwrap(),
        n + SignedDuration::from_hours(30 * 24)
    );
    let at = n + SignedDuration::from_hours(2);
    assert_eq!(resolve_expiry(None, Some(at), n, &limits).unwrap(), at);
    // Bounds are inclusive, to the nanosecond for expires_at.
    let edge = n + SignedDuration::from_secs(60);
    assert_eq!(resolve_expiry(None, Some(edge), n, &limits).unwrap(), edge);
    let short = edge - SignedDuration::from_nanos(1);
    assert_eq!(
        resolve_expiry(None, Some(short), n, &limits)
            .unwrap_err()
            .field,
        "expires_at"
    );
    let err = resolve_expiry(Some(60), Some(at), n, &limits).unwrap_err();
    assert_eq!(err.field, "expires_at");
    assert!(err.message.contains("not both"));
    // A server configured with a default outside its bounds gets an error, not a bad key.
    let odd = PolicyLimits {
        min_ttl_seconds: 2 * 86400,
        ..limits
    };
    assert!(resolve_expiry(None, None, n, &odd).is_err());
    // Overflow at the end of time is an error, not a panic.
    let huge = PolicyLimits {
        max_ttl_seconds: i64::MAX,
        ..limits
    };
    assert!(resolve_expiry(Some(i64::MAX), None, n, &huge).is_err());
    assert!(resolve_expiry(Some(86400), None, Timestamp::MAX, &limits).is_err());
}

#[test]
fn denial_codes() {
    for (d, code) in [
        (Denial::Gone, "not_found"),
        (Denial::Locked, "key_locked"),
        (Denial::ServiceNotAllowed, "service_not_allowed"),
        (Denial::DomainNotAllowed, "domain_not_allowed"),
        (Denial::IpNotAllowed, "ip_not_allowed"),
        (Denial::OutsideTimeWindow, "outside_time_window"),
        (Denial::GeoDenied, "geo_denied"),
        (Denial::GeoContextRequired, "geo_context_required"),
        (Denial::ProximityDenied, "proximity_denied"),
        (
            Denial::ProximityContextRequired,
            "proximity_context_required",
        ),
        (Denial::PasswordRequired, "password_required"),
        (
            Denial::PasswordIncorrect { now_locked: false },
            "password_incorrect",
        ),
        (Denial::PasswordIncorrect { now_locked: true }, "key_locked"),
    ] {
        assert_eq!(d.code(), code);
    }
}

#[test]
fn lifecycle_rules() {
    let later = now() + SignedDuration::from_mins(5);
    let earlier = now() - SignedDuration::from_secs(1);
    run(vec![
        case("empty policy allows", json!({}), Decision::Allow),
        Case {
            now: fresh().expires_at,
            ..case("expired at the instant", json!({}), deny(Denial::Gone))
        },
        Case {
            now: fresh().expires_at - SignedDuration::from_nanos(1),
            ..case("alive just before", json!({}), Decision::Allow)
        },
        Case {
            facts: KeyFacts {
                retrievals: 1,
                ..fresh()
            },
            ..case("used up", json!({}), deny(Denial::Gone))
        },
        Case {
            facts: KeyFacts {
                retrievals: 2,
                ..fresh()
            },
            ..case(
                "retrievals left",
                json!({"max_retrievals": 3}),
                Decision::Allow,
            )
        },
        Case {
            facts: KeyFacts {
                retrievals: 1,
                pending: pending("svc_a", later),
                ..fresh()
            },
            ..case(
                "same service during grace",
                json!({"require_confirmation": true}),
                Decision::AllowAgain {
                    retrieval_id: "ret_1".into(),
                },
            )
        },
        Case {
            facts: KeyFacts {
                retrievals: 1,
                pending: pending("svc_b", later),
                ..fresh()
            },
            ..case(
                "held for another service",
                json!({"require_confirmation": true}),
                deny(Denial::Gone),
            )
        },
        Case {
            facts: KeyFacts {
                retrievals: 1,
                pending: pending("svc_a", now()),
                ..fresh()
            },
            ..case(
                "grace over at confirm_by",
                json!({"require_confirmation": true}),
                deny(Denial::Gone),
            )
        },
        Case {
            facts: KeyFacts {
                retrievals: 1,
                pending: pending("svc_a", earlier),
                ..fresh()
            },
            ..case(
                "grace over",
                json!({"require_confirmation": true}),
                deny(Denial::Gone),
            )
        },
        Case {
            facts: KeyFacts {
                pending: pending("svc_a", later),
                ..fresh()
            },
            req: Req {
                ip: "192.0.2.1".parse().unwrap(),
                ..req()
            },
            ..case(
                "allow again skips the rules (as the first retrieval passed them)",
                json!({"require_confirmation": true, "fetcher_cidrs": ["10.0.0.0/8"]}),
                Decision::AllowAgain {
                    retrieval_id: "ret_1".into(),
                },
            )
        },
        Case {
            facts: KeyFacts {
                locked: true,
                ..fresh()
            },
            ..case("locked", json!({"password": "pw"}), deny(Denial::Locked))
        },
        Case {
            facts: KeyFacts {
                failed_password_attempts: MAX_PASSWORD_FAILURES,
                ..fresh()
            },
            ..case(
                "too many failures is locked",
                json!({"password": "pw"}),
                deny(Denial::Locked),
            )
        },
        Case {
            facts: KeyFacts {
                locked: true,
                pending: pending("svc_a", later),
                ..fresh()
            },
            ..case(
                "locked beats allow-again",
                json!({"password": "pw", "require_confirmation": true}),
                deny(Denial::Locked),
            )
        },
        Case {
            facts: KeyFacts {
                locked: true,
                ..fresh()
            },
            req: Req {
                service_id: "svc_z".into(),
                domains: vec![],
                ip: "192.0.2.1".parse().unwrap(),
                context: None,
                password: PasswordCheck::Incorrect,
            },
            now: at("2025-01-06T03:00:00Z"),
            ..case(
                "locked beats every rule",
                json!({
                    "password": "pw", "services": ["svc_a"], "domains": ["example.com"],
                    "fetcher_cidrs": ["203.0.113.0/24"],
                    "time_window": {"timezone": "UTC", "start": "08:00", "end": "18:00"},
                    "geo": {"countries": ["DE"]}
                }),
                deny(Denial::Locked),
            )
        },
        Case {
            facts: KeyFacts {
                locked: true,
                expires_at: now(),
                ..fresh()
            },
            ..case("gone beats locked", json!({}), deny(Denial::Gone))
        },
        Case {
            facts: KeyFacts {
                locked: true,
                pending: pending("svc_b", later),
                ..fresh()
            },
            ..case(
                "held elsewhere beats locked",
                json!({"require_confirmation": true}),
                deny(Denial::Gone),
            )
        },
    ]);
}

#[test]
fn service_and_domain_rules() {
    let with = |service: &str, domains: &[&str]| Req {
        service_id: service.into(),
        domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        ..req()
    };
    run(vec![
        case(
            "listed service",
            json!({"services": ["svc_x", "svc_a"]}),
            Decision::Allow,
        ),
        Case {
            req: with("svc_b", &["app.example.com"]),
            ..case(
                "unlisted service",
                json!({"services": ["svc_a"]}),
                deny(Denial::ServiceNotAllowed),
            )
        },
        Case {
            req: with("SVC_A", &["app.example.com"]),
            ..case(
                "service ids are exact",
                json!({"services": ["svc_a"]}),
                deny(Denial::ServiceNotAllowed),
            )
        },
        case(
            "subdomain",
            json!({"domains": ["example.com"]}),
            Decision::Allow,
        ),
        Case {
            req: with("svc_a", &["example.com"]),
            ..case(
                "equal domain",
                json!({"domains": ["example.com"]}),
                Decision::Allow,
            )
        },
        Case {
            req: with("svc_a", &["APP.Example.Com."]),
            ..case(
                "case and trailing dot",
                json!({"domains": ["EXAMPLE.com"]}),
                Decision::Allow,
            )
        },
        Case {
            req: with("svc_a", &["evilexample.com"]),
            ..case(
                "suffix that is not a label",
                json!({"domains": ["example.com"]}),
                deny(Denial::DomainNotAllowed),
            )
        },
        Case {
            req: with("svc_a", &["example.com"]),
            ..case(
                "parent of a listed domain",
                json!({"domains": ["app.example.com"]}),
                deny(Denial::DomainNotAllowed),
            )
        },
        Case {
            req: with("svc_a", &["other.net", "a.b.example.org"]),
            ..case(
                "any of the service's domains vs any listed",
                json!({"domains": ["example.com", "example.org"]}),
                Decision::Allow,
            )
        },
        Case {
            req: with("svc_a", &[]),
            ..case(
                "service without domains",
                json!({"domains": ["example.com"]}),
                deny(Denial::DomainNotAllowed),
            )
        },
        Case {
            req: with("svc_b", &["evil.net"]),
            ..case(
                "services before domains",
                json!({"services": ["svc_a"], "domains": ["example.com"]}),
                deny(Denial::ServiceNotAllowed),
            )
        },
    ]);
}

#[test]
fn ip_rules() {
    let from = |ip: &str| Req {
        ip: ip.parse().unwrap(),
        ..req()
    };
    let v4 = json!({"fetcher_cidrs": ["198.51.100.0/24", "10.0.0.0/8"]});
    let v6 = json!({"fetcher_cidrs": ["2001:db8:1::/48"]});
    run(vec![
        Case {
            req: from("10.200.3.4"),
            ..case("inside v4", v4.clone(), Decision::Allow)
        },
        Case {
            req: from("198.51.100.255"),
            ..case("last of the range", v4.clone(), Decision::Allow)
        },
        Case {
            req: from("198.51.101.0"),
            ..case("just outside", v4.clone(), deny(Denial::IpNotAllowed))
        },
        Case {
            req: from("::ffff:10.1.2.3"),
            ..case("mapped v4 inside", v4.clone(), Decision::Allow)
        },
        Case {
            req: from("::ffff:11.1.2.3"),
            ..case("mapped v4 outside", v4.clone(), deny(Denial::IpNotAllowed))
        },
        Case {
            req: from("10.1.2.3"),
            ..case(
                "plain v4 vs a policy in mapped form",
                json!({"fetcher_cidrs": ["::ffff:10.0.0.0/104"]}),
                Decision::Allow,
            )
        },
        Case {
            req: from("::a01:203"),
            ..case(
                "IPv4-compatible (not mapped) is not v4",
                v4.clone(),
                deny(Denial::IpNotAllowed),
            )
        },
        Case {
            req: from("2001:db8:1:ffff::1"),
            ..case("inside v6", v6.clone(), Decision::Allow)
        },
        Case {
            req: from("2001:db8:2::1"),
            ..case("outside v6", v6.clone(), deny(Denial::IpNotAllowed))
        },
        Case {
            req: from("10.0.0.1"),
            ..case("v4 vs v6 list", v6.clone(), deny(Denial::IpNotAllowed))
        },
        Case {
            req: from("203.0.113.7"),
            ..case(
                "bare address",
                json!({"fetcher_cidrs": ["203.0.113.7"]}),
                Decision::Allow,
            )
        },
        Case {
            req: from("192.0.2.1"),
            ..case(
                "services ok but ip denied reports ip",
                json!({"services": ["svc_a"], "domains": ["example.com"], "fetcher_cidrs": ["10.0.0.0/8"]}),
                deny(Denial::IpNotAllowed),
            )
        },
    ]);
}

#[test]
fn time_window_rules() {
    let weekday_hours = json!({"time_window": {
        "timezone": "Europe/Berlin", "days": ["mon","tue","wed","thu","fri"],
        "start": "08:00", "end": "18:00"}});
    let monday_night = json!({"time_window": {
        "timezone": "Europe/Berlin", "days": ["mon"], "start": "22:00", "end": "06:00"}});
    let new_york = json!({"time_window": {
        "timezone": "America/New_York", "start": "09:00", "end": "17:00"}});
    // Expiry far enough away for every instant below.
    let facts = KeyFacts {
        expires_at: at("2026-01-01T00:00:00Z"),
        ..fresh()
    };
    let when = |name, policy: &serde_json::Value, instant: &str, want| Case {
        now: at(instant),
        facts: facts.clone(),
        ..case(name, policy.clone(), want)
    };
    run(vec![
        when(
            "Monday noon",
            &weekday_hours,
            "2025-01-06T11:00:00Z",
            Decision::Allow,
        ),
        when(
            "Monday 07:59 Berlin",
            &weekday_hours,
            "2025-01-06T06:59:00Z",
            deny(Denial::OutsideTimeWindow),
        ),
        when(
            "Saturday noon",
            &weekday_hours,
            "2025-01-11T11:00:00Z",
            deny(Denial::OutsideTimeWindow),
        ),
        when(
            "Tuesday 03:00 Berlin is Monday's night",
            &monday_night,
            "2025-01-07T02:00:00Z",
            Decision::Allow,
        ),
        when(
            "Monday 03:00 Berlin is Sunday's night",
            &monday_night,
            "2025-01-06T02:00:00Z",
            deny(Denial::OutsideTimeWindow),
        ),
        when(
            "Wednesday 03:00 Berlin is Tuesday's night",
            &monday_night,
            "2025-01-08T02:00:00Z",
            deny(Denial::OutsideTimeWindow),
        ),
        when(
            "New York 09:00 EST",
            &new_york,
            "2025-01-06T14:00:00Z",
            Decision::Allow,
        ),
        when(
            "New York 08:00 EDT (13:00 UTC would be 09:00 in winter)",
            &new_york,
            "2025-07-07T12:00:00Z",
            deny(Denial::OutsideTimeWindow),
        ),
        when(
            "New York 09:00 EDT",
            &new_york,
            "2025-07-07T13:00:00Z",
            Decision::Allow,
        ),
        Case {
            req: Req {
                ip: "192.0.2.1".parse().unwrap(),
                ..req()
            },
            ..when(
                "ip before time window",
                &json!({"fetcher_cidrs": ["10.0.0.0/8"], "time_window": {
                    "timezone": "UTC", "start": "00:00", "end": "00:01"}}),
                "2025-01-06T12:00:00Z",
                deny(Denial::IpNotAllowed),
            )
        },
    ]);
}

#[test]
fn geo_rules() {
    let ctx = |lat: Option<f64>, lon: Option<f64>, country: Option<&str>| Req {
        context: Some(RetrievalContext {
            ip: None,
            latitude: lat,
            longitude: lon,
            country: country.map(str::to_owned),
        }),
        ..req()
    };
    // 1 degree of longitude on the equator ≈ 111.195 km.
    let equator = |r: f64| json!({"geo": {"latitude": 0.0, "longitude": 0.0, "radius_km": r}});
    let berlin_de = json!({"geo": {"latitude": 52.52, "longitude": 13.405, "radius_km": 30.0, "countries": ["DE"]}});
    run(vec![
        Case {
            req: ctx(Some(0.0), Some(1.0), None),
            ..case("just inside", equator(111.2), Decision::Allow)
        },
        Case {
            req: ctx(Some(0.0), Some(1.0), None),
            ..case("just outside", equator(111.19), deny(Denial::GeoDenied))
        },
        Case {
            req: ctx(None, None, Some("DE")),
            ..case(
                "no coordinates",
                equator(100.0),
                deny(Denial::GeoContextRequired),
            )
        },
        Case {
            req: Req {
                context: None,
                ..req()
            },
            ..case(
                "no context",
                equator(100.0),
                deny(Denial::GeoContextRequired),
            )
        },
        case("Berlin in DE", berlin_de.clone(), Decision::Allow),
        Case {
            req: ctx(Some(52.52), Some(13.405), Some("PL")),
            ..case(
                "both parts must hold",
                berlin_de.clone(),
                deny(Denial::GeoDenied),
            )
        },
        Case {
            req: ctx(Some(48.1), Some(11.6), Some("DE")),
            ..case(
                "Munich is in DE but far",
                berlin_de.clone(),
                deny(Denial::GeoDenied),
            )
        },
        Case {
            req: ctx(Some(52.52), Some(13.405), None),
            ..case(
                "country missing",
                berlin_de.clone(),
                deny(Denial::GeoContextRequired),
            )
        },
        Case {
            req: ctx(Some(40.7), Some(-74.0), Some("us")),
            ..case(
                "countries only, lower-case context",
                json!({"geo": {"countries": ["US", "CA"]}}),
                Decision::Allow,
            )
        },
        Case {
            req: Req {
                ip: "192.0.2.1".parse().unwrap(),
                context: None,
                ..req()
            },
            ..case(
                "ip before geo",
                json!({"fetcher_cidrs": ["10.0.0.0/8"], "geo": {"countries": ["DE"]}}),
                deny(Denial::IpNotAllowed),
            )
        },
    ]);
}

#[test]
fn proximity_rules() {
    use super::origin_network;
    let home = |ip: &str| KeyFacts {
        origin_network: Some(origin_network(ip.parse().unwrap())),
        ..fresh()
    };
    let from = |ip: Option<&str>| Req {
        context: Some(RetrievalContext {
            ip: ip.map(str::to_owned),
            ..req().context.unwrap()
        }),
        ..req()
    };
    let near = json!({"proximity": "same_network"});
    let with = |name, facts: KeyFacts, r: Req, want| Case {
        facts,
        req: r,
        ..case(name, near.clone(), want)
    };
    run(vec![
        with(
            "same /24",
            home("198.51.100.7"),
            from(Some("198.51.100.250")),
            Decision::Allow,
        ),
        with(
            "IPv4-mapped context in the same /24",
            home("198.51.100.7"),
            from(Some("::ffff:198.51.100.9")),
            Decision::Allow,
        ),
        with(
            "neighbouring /24",
            home("198.51.100.7"),
            from(Some("198.51.101.7")),
            deny(Denial::ProximityDenied),
        ),
        with(
            "same /48",
            home("2001:db8:1:2::1"),
            from(Some("2001:db8:1:ffff::9")),
            Decision::Allow,
        ),
        with(
            "other /48",
            home("2001:db8:1:2::1"),
            from(Some("2001:db8:2::1")),
            deny(Denial::ProximityDenied),
        ),
        with(
            "IPv6 context for an IPv4 origin",
            home("198.51.100.7"),
            from(Some("2001:db8::1")),
            deny(Denial::ProximityDenied),
        ),
        with(
            "not an address",
            home("198.51.100.7"),
            from(Some("the office")),
            deny(Denial::ProximityDenied),
        ),
        with(
            "no network recorded",
            fresh(),
            from(Some("198.51.100.7")),
            deny(Denial::ProximityDenied),
        ),
        with(
            "no context ip",
            home("198.51.100.7"),
            from(None),
            deny(Denial::ProximityContextRequired),
        ),
        with(
            "no context at all",
            home("198.51.100.7"),
            Req {
                context: None,
                ..req()
            },
            deny(Denial::ProximityContextRequired),
        ),
        Case {
            facts: home("198.51.100.7"),
            req: from(Some("198.51.100.8")),
            ..case(
                "without the rule the context is not looked at",
                json!({}),
                Decision::Allow,
            )
        },
        with(
            "the service's own address does not count",
            home("203.0.113.1"),
            from(Some("198.51.100.7")),
            deny(Denial::ProximityDenied),
        ),
    ]);
    // The network is the /24 or /48, host bits cleared; a mapped address is its IPv4 host.
    assert_eq!(
        origin_network("203.0.113.77".parse().unwrap()).to_string(),
        "203.0.113.0/24"
    );
    assert_eq!(
        origin_network("::ffff:203.0.113.77".parse().unwrap()).to_string(),
        "203.0.113.0/24"
    );
    assert_eq!(
        origin_network("2001:db8:aaaa:bbbb::1".parse().unwrap()).to_string(),
        "2001:db8:aaaa::/48"
    );
    // The rule is refuse-only: a key another rule refuses stays refused in its network.
    run(vec![Case {
        facts: home("198.51.100.7"),
        req: from(Some("198.51.100.8")),
        ..case(
            "refuse-only",
            json!({"proximity": "same_network", "services": ["svc_b"]}),
            deny(Denial::ServiceNotAllowed),
        )
    }]);
    assert!(serde_json::from_value::<PolicyInput>(json!({"proximity": "same_city"})).is_err());
}

#[test]
fn password_rules() {
    let with = |password| Req { password, ..req() };
    let failures = |n| KeyFacts {
        failed_password_attempts: n,
        ..fresh()
    };
    let pw = json!({"password": "correct horse"});
    run(vec![
        Case {
            req: with(PasswordCheck::Correct),
            ..case("correct", pw.clone(), Decision::Allow)
        },
        case("missing", pw.clone(), deny(Denial::PasswordRequired)),
        Case {
            req: with(PasswordCheck::Incorrect),
            ..case(
                "first wrong",
                pw.clone(),
                deny(Denial::PasswordIncorrect { now_locked: false }),
            )
        },
        Case {
            req: with(PasswordCheck::Incorrect),
            facts: failures(MAX_PASSWORD_FAILURES - 2),
            ..case(
                "fourth wrong",
                pw.clone(),
                deny(Denial::PasswordIncorrect { now_locked: false }),
            )
        },
        Case {
            req: with(PasswordCheck::Incorrect),
            facts: failures(MAX_PASSWORD_FAILURES - 1),
            ..case(
                "fifth wrong locks",
                pw.clone(),
                deny(Denial::PasswordIncorrect { now_locked: true }),
            )
        },
        Case {
            req: with(PasswordCheck::Correct),
            facts: failures(MAX_PASSWORD_FAILURES - 1),
            ..case("correct after four wrong", pw.clone(), Decision::Allow)
        },
        Case {
            req: with(PasswordCheck::Incorrect),
            ..case("no password in policy: ignored", json!({}), Decision::Allow)
        },
        Case {
            req: with(PasswordCheck::Unverified),
            ..case("unverified: check it", pw.clone(), Decision::VerifyPassword)
        },
        Case {
            req: with(PasswordCheck::Unverified),
            ..case(
                "unverified, no password in policy",
                json!({}),
                Decision::Allow,
            )
        },
        Case {
            req: with(PasswordCheck::Unverified),
            facts: failures(MAX_PASSWORD_FAILURES),
            ..case(
                "unverified, locked: no check",
                pw.clone(),
                deny(Denial::Locked),
            )
        },
        Case {
            req: Req {
                service_id: "svc_b".into(),
                password: PasswordCheck::Unverified,
                ..req()
            },
            ..case(
                "unverified, refused service: no check",
                json!({"password": "pw", "services": ["svc_a"]}),
                deny(Denial::ServiceNotAllowed),
            )
        },
        Case {
            req: Req {
                service_id: "svc_b".into(),
                password: PasswordCheck::Incorrect,
                ..req()
            },
            ..case(
                "a refused service cannot burn password tries",
                json!({"password": "pw", "services": ["svc_a"]}),
                deny(Denial::ServiceNotAllowed),
            )
        },
        Case {
            req: Req {
                context: None,
                password: PasswordCheck::NotGiven,
                ..req()
            },
            ..case(
                "geo before password",
                json!({"password": "pw", "geo": {"countries": ["DE"]}}),
                deny(Denial::GeoContextRequired),
            )
        },
    ]);
}

#[test]
fn stored_policy_round_trips_through_json() {
    let p = policy(json!({
        "max_retrievals": 3, "password": "pw", "services": ["svc_a"],
        "domains": ["example.com"], "fetcher_cidrs": ["10.0.0.0/8", "2001:db8::/32"],
        "time_window": {"timezone": "Europe/Berlin", "days": ["fri", "mon"], "start": "22:00", "end": "06:00"},
        "geo": {"latitude": 52.52, "longitude": 13.405, "radius_km": 30.0, "countries": ["de"]},
        "require_confirmation": true, "confirm_grace_seconds": 120
    }));
    let stored = serde_json::to_string(&p).unwrap();
    assert!(!stored.contains("\"pw\""), "{stored}");
    let back: Policy = serde_json::from_str(&stored).unwrap();
    assert_eq!(back, p);
}

// ---- property tests -------------------------------------------------------------------------

fn opt<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Option<T>> {
    proptest::option::weighted(0.4, s)
}

fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
        any::<[u8; 4]>().prop_map(|b| IpAddr::V6(std::net::Ipv4Addr::from(b).to_ipv6_mapped())),
        (0u8..4).prop_map(|last| IpAddr::from([10, 0, 0, last])),
    ]
}

fn arb_cidr() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (any::<[u8; 4]>(), 0u8..=32)
            .prop_map(|(b, p)| format!("{}/{p}", std::net::Ipv4Addr::from(b))),
        2 => (any::<[u8; 16]>(), 0u8..=128)
            .prop_map(|(b, p)| format!("{}/{p}", std::net::Ipv6Addr::from(b))),
        3 => Just("10.0.0.0/30".to_owned()),
        2 => Just("::ffff:10.0.0.0/120".to_owned()),
        1 => Just("bogus".to_owned()),
    ]
}

fn arb_service() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("svc_a".to_owned()),
        4 => Just("svc_b".to_owned()),
        1 => "[a-z_]{0,6}",
    ]
}

fn arb_domain() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("example.com".to_owned()),
        3 => Just("a.example.com".to_owned()),
        3 => Just("evilexample.com".to_owned()),
        3 => Just("EXAMPLE.org.".to_owned()),
        1 => "[a-z.\\-]{0,12}",
    ]
}

fn arb_hh_mm() -> impl Strategy<Value = String> {
    prop_oneof![
        20 => (0u8..24, 0u8..60).prop_map(|(h, m)| format!("{h:02}:{m:02}")),
        1 => "[0-9:]{0,6}",
    ]
}

fn arb_time_window() -> impl Strategy<Value = crate::wire::TimeWindowInput> {
    let zones = prop_oneof![
        Just("UTC"),
        Just("Europe/Berlin"),
        Just("America/New_York"),
        Just("Australia/Lord_Howe"),
        Just("Pacific/Kiritimati"),
        Just("Nowhere/Land"),
    ];
    let names = vec!["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let days = prop_oneof![
        10 => proptest::sample::subsequence(names, 1..=7),
        1 => proptest::collection::vec(prop_oneof![Just("mon"), Just("xyz")], 0..3),
    ];
    (zones, opt(days), arb_hh_mm(), arb_hh_mm()).prop_map(|(zone, days, start, end)| {
        crate::wire::TimeWindowInput {
            timezone: zone.to_owned(),
            days: days.map(|d| d.into_iter().map(str::to_owned).collect()),
            start,
            end,
        }
    })
}

fn arb_coordinate(limit: f64) -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => -limit..=limit,
        1 => Just(limit),
        1 => Just(-limit),
        1 => -2.0 * limit..2.0 * limit,
    ]
}

fn arb_geo() -> impl Strategy<Value = crate::wire::GeoInput> {
    let country = prop_oneof![4 => Just("DE"), 4 => Just("us"), 1 => Just("UK"), 1 => Just("X")];
    let radius = prop_oneof![8 => 0.001..25_000.0, 1 => Just(0.0), 1 => Just(f64::INFINITY)];
    let circle = prop_oneof![
        8 => (arb_coordinate(90.0), arb_coordinate(180.0), radius)
            .prop_map(|(a, b, c)| (Some(a), Some(b), Some(c))),
        1 => (opt(arb_coordinate(90.0)), opt(arb_coordinate(180.0)), opt(0.1..100.0)),
    ];
    (opt(circle), opt(proptest::collection::vec(country, 0..3))).prop_map(|(circle, countries)| {
        let (latitude, longitude, radius_km) = circle.unwrap_or((None, None, None));
        crate::wire::GeoInput {
            latitude,
            longitude,
            radius_km,
            countries: countries.map(|c| c.into_iter().map(str::to_owned).collect()),
        }
    })
}

prop_compose! {
    fn arb_policy_input()(
        ttl in opt(prop_oneof![9 => 60i64..=30 * 86400, 1 => -10i64..40 * 86400]),
        max_retrievals in opt(prop_oneof![9 => 1u32..=100, 1 => 0u32..110]),
        password in opt(prop_oneof![1 => Just(String::new()), 9 => "[a-z]{1,8}"]),
        services in opt(proptest::collection::vec(arb_service(), 0..3)),
        domains in opt(proptest::collection::vec(arb_domain(), 0..3)),
        fetcher_cidrs in opt(proptest::collection::vec(arb_cidr(), 0..3)),
        time_window in opt(arb_time_window()),
        geo in opt(arb_geo()),
        proximity in opt(Just(crate::wire::Proximity::SameNetwork)),
        require_confirmation in opt(any::<bool>()),
        confirm_grace_seconds in opt(prop_oneof![9 => 1u32..=86_400, 1 => 0u32..90_000]),
    ) -> PolicyInput {
        PolicyInput {
            ttl_seconds: ttl, expires_at: None, max_retrievals, password, services, domains,
            fetcher_cidrs, time_window, geo, proximity, require_confirmation,
            confirm_grace_seconds,
        }
    }
}

prop_compose! {
    fn arb_facts()(
        life in prop_oneof![9 => 1i64..8 * 86400, 1 => -3600i64..=0],
        retrievals in prop_oneof![9 => Just(0u32), 1 => 0u32..4],
        failed_password_attempts in prop_oneof![8 => 0u32..5, 2 => 5u32..7],
        locked in proptest::bool::weighted(0.1),
        pending in proptest::option::weighted(0.15, (arb_service(), -600i64..600)),
        origin in opt(arb_ip()),
    ) -> KeyFacts {
        KeyFacts {
            expires_at: now() + SignedDuration::from_secs(life),
            retrievals,
            failed_password_attempts,
            locked,
            pending: pending.map(|(service_id, grace)| Pending {
                retrieval_id: "ret_p".into(),
                service_id,
                confirm_by: now() + SignedDuration::from_secs(grace),
            }),
            origin_network: origin.map(super::origin_network),
        }
    }
}

prop_compose! {
    fn arb_req()(
        service_id in arb_service(),
        domains in proptest::collection::vec(arb_domain(), 0..3),
        ip in arb_ip(),
        context in opt((opt(arb_coordinate(90.0)), opt(arb_coordinate(180.0)),
            opt(prop_oneof![Just("DE"), Just("de"), Just("US"), Just("")]))),
        password in prop_oneof![
            Just(PasswordCheck::NotGiven), Just(PasswordCheck::Correct), Just(PasswordCheck::Incorrect),
            Just(PasswordCheck::Unverified)
        ],
    ) -> Req {
        Req {
            service_id,
            domains,
            ip,
            context: context.map(|(latitude, longitude, country)| RetrievalContext {
                ip: None, latitude, longitude, country: country.map(str::to_owned),
            }),
            password,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random inputs never panic, and a denial always names a rule that applies: one present
    /// in the policy, or a fact of the key.
    #[test]
    fn denial_names_a_present_rule(
        input in arb_policy_input(),
        facts in arb_facts(),
        r in arb_req(),
        offset in 0i64..7 * 86400,
    ) {
        let Ok((policy, _)) = Policy::from_input(&input, now(), &PolicyLimits::default()) else {
            return Ok(());
        };
        // Facts are generated around now(); move them with the instant, so that the instant
        // roams the week (for time windows) while the key stays mostly alive.
        let shift = SignedDuration::from_secs(offset);
        let instant = now() + shift;
        let mut facts = facts;
        facts.expires_at += shift;
        if let Some(p) = facts.pending.as_mut() {
            p.confirm_by += shift;
        }
        let decision = decide(&policy, &facts, &r.get(), instant);
        match decision {
            Decision::Allow => {
                prop_assert!(instant < facts.expires_at);
                prop_assert!(facts.pending.is_none());
                prop_assert!(!facts.locked);
                prop_assert!(!policy.has_password || r.password == PasswordCheck::Correct);
            }
            Decision::AllowAgain { .. } => {
                let p = facts.pending.as_ref().unwrap();
                prop_assert_eq!(&p.service_id, &r.service_id);
                prop_assert!(instant < p.confirm_by);
            }
            Decision::VerifyPassword => {
                prop_assert!(policy.has_password && r.password == PasswordCheck::Unverified);
            }
            Decision::Deny(d) => {
                let present = match d {
                    Denial::Gone => instant >= facts.expires_at
                        || facts.pending.is_some()
                        || facts.retrievals >= policy.max_retrievals,
                    Denial::Locked => {
                        facts.locked || facts.failed_password_attempts >= MAX_PASSWORD_FAILURES
                    }
                    Denial::ServiceNotAllowed => policy.services.is_some(),
                    Denial::DomainNotAllowed => policy.domains.is_some(),
                    Denial::IpNotAllowed => policy.fetcher_cidrs.is_some(),
                    Denial::OutsideTimeWindow => policy.time_window.is_some(),
                    Denial::GeoDenied | Denial::GeoContextRequired => policy.geo.is_some(),
                    Denial::ProximityDenied | Denial::ProximityContextRequired => {
                        policy.proximity.is_some()
                    }
                    Denial::PasswordRequired => {
                        policy.has_password && r.password == PasswordCheck::NotGiven
                    }
                    Denial::PasswordIncorrect { .. } => {
                        policy.has_password && r.password == PasswordCheck::Incorrect
                    }
                };
                prop_assert!(present, "{:?} for {:?}", d, policy);
            }
        }
    }

    /// A password not checked yet is asked for only where the right one would get the key,
    /// and everything else is decided as if it were right: argon2 runs only for a key that
    /// every other rule hands to this service.
    #[test]
    fn an_unverified_password_is_checked_only_where_it_decides(
        input in arb_policy_input(),
        facts in arb_facts(),
        r in arb_req(),
    ) {
        let Ok((policy, _)) = Policy::from_input(&input, now(), &PolicyLimits::default()) else {
            return Ok(());
        };
        let decided = |password| {
            let r = Req { password, ..r.clone() };
            decide(&policy, &facts, &r.get(), now())
        };
        let unverified = decided(PasswordCheck::Unverified);
        let correct = decided(PasswordCheck::Correct);
        if policy.has_password && correct == Decision::Allow {
            prop_assert_eq!(unverified, Decision::VerifyPassword);
        } else {
            prop_assert_eq!(unverified, correct);
        }
    }

    /// Every valid policy survives being stored and read back.
    #[test]
    fn valid_policies_round_trip(input in arb_policy_input()) {
        if let Ok((policy, expires)) = Policy::from_input(&input, now(), &PolicyLimits::default()) {
            let stored = serde_json::to_string(&policy).unwrap();
            let back: Policy = serde_json::from_str(&stored).unwrap();
            prop_assert_eq!(back, policy);
            let life = expires.duration_since(now()).as_secs();
            prop_assert!((60..=30 * 86400).contains(&life));
        }
    }

    /// Without rules and with a fresh key, everyone gets it.
    #[test]
    fn empty_policy_allows_everyone(r in arb_req()) {
        let policy = policy(json!({}));
        prop_assert_eq!(decide(&policy, &fresh(), &r.get(), now()), Decision::Allow);
    }
}

/// A default policy is stored without its absent rules, and a row written with every field
/// spelled out (as before that) still reads the same.
#[test]
fn stored_policy_leaves_out_absent_rules_and_reads_old_rows() {
    let p = policy(json!({}));
    assert_eq!(
        serde_json::to_string(&p).unwrap(),
        r#"{"max_retrievals":1}"#
    );
    let old = r#"{"max_retrievals":1,"has_password":false,"services":null,"domains":null,
        "fetcher_cidrs":null,"time_window":null,"geo":null,"require_confirmation":false,
        "confirm_grace_seconds":300}"#;
    assert_eq!(serde_json::from_str::<Policy>(old).unwrap(), p);
}
