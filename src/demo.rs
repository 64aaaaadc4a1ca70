//! The built-in demo stream: realistic benign control-plane traffic with attack scenarios, as raw
//! provider records (CloudTrail and Entra ID), deterministic for a given [`Scenario`].
//!
//! Benign: three AWS accounts in two regions, application roles and people calling read APIs,
//! writing objects and fetching their own secret now and then; an Entra tenant with routine
//! directory changes. Attacks (offsets from the start):
//! - +60 min: a secret-fetch burst by `mallory` (40 secrets, plus SSM parameters with decryption);
//! - +75 min: a discovery burst by a compromised role (30 distinct read APIs in 3 minutes);
//! - +90 min: `StopLogging` on the organisation trail of account 222222222222, after which that
//!   account's us-east-1 management events stop: a log source goes silent;
//! - +120 min: quota-increase requests across four regions account 333333333333 never used;
//! - +150 min: a conditional access policy switched from enabled to disabled.
//!
//! A few malformed records are mixed in: they must be counted and must not stop anything.
//! `cloudwarden demo` and the benchmarks use this stream.

use crate::config::Config;
use crate::event::time::format_rfc3339_ms;
use serde_json::json;
use std::time::Duration;

/// Shape of the generated stream.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Event time of the first record, epoch ms.
    pub start_ms: i64,
    /// Length of the stream in event time.
    pub minutes: i64,
    /// Benign events per minute across all accounts.
    pub benign_per_minute: u32,
    /// Include the attack scenarios.
    pub attacks: bool,
    /// Include malformed records.
    pub malformed: bool,
    pub seed: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            // 2026-11-01T00:00:00Z
            start_ms: 1_793_491_200_000,
            minutes: 180,
            benign_per_minute: 120,
            attacks: true,
            malformed: true,
            seed: 7,
        }
    }
}

/// The config `cloudwarden demo` runs with: defaults, with the warm-ups shortened to fit a
/// three-hour stream.
pub fn demo_config() -> Config {
    let mut c = Config::default();
    c.detectors.quota_change.region_warmup = Duration::from_secs(3600);
    c
}

/// A small deterministic generator (SplitMix64): the demo must be the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const ACCOUNTS: [&str; 3] = ["111111111111", "222222222222", "333333333333"];
const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];
const TENANT: &str = "8f1f3c2e-5b7a-4c1e-9d2a-0c6e1b7a9f10";
const READS: [(&str, &str); 12] = [
    ("ec2.amazonaws.com", "DescribeInstances"),
    ("ec2.amazonaws.com", "DescribeVolumes"),
    ("s3.amazonaws.com", "ListBuckets"),
    ("s3.amazonaws.com", "GetBucketLocation"),
    ("iam.amazonaws.com", "GetRole"),
    ("lambda.amazonaws.com", "ListFunctions20150331"),
    ("dynamodb.amazonaws.com", "DescribeTable"),
    ("sts.amazonaws.com", "GetCallerIdentity"),
    ("rds.amazonaws.com", "DescribeDBInstances"),
    ("cloudwatch.amazonaws.com", "GetMetricData"),
    ("kms.amazonaws.com", "Decrypt"),
    ("s3.amazonaws.com", "PutObject"),
];
const RECON: [(&str, &str); 30] = [
    ("iam.amazonaws.com", "ListUsers"),
    ("iam.amazonaws.com", "ListRoles"),
    ("iam.amazonaws.com", "ListPolicies"),
    ("iam.amazonaws.com", "ListGroups"),
    ("iam.amazonaws.com", "ListAccessKeys"),
    ("iam.amazonaws.com", "GetAccountPasswordPolicy"),
    ("iam.amazonaws.com", "GetAccountAuthorizationDetails"),
    ("iam.amazonaws.com", "ListAttachedRolePolicies"),
    ("ec2.amazonaws.com", "DescribeInstances"),
    ("ec2.amazonaws.com", "DescribeSecurityGroups"),
    ("ec2.amazonaws.com", "DescribeVpcs"),
    ("ec2.amazonaws.com", "DescribeSubnets"),
    ("ec2.amazonaws.com", "DescribeSnapshots"),
    ("ec2.amazonaws.com", "DescribeImages"),
    ("ec2.amazonaws.com", "DescribeKeyPairs"),
    ("s3.amazonaws.com", "ListBuckets"),
    ("s3.amazonaws.com", "GetBucketPolicy"),
    ("s3.amazonaws.com", "GetBucketAcl"),
    ("rds.amazonaws.com", "DescribeDBInstances"),
    ("rds.amazonaws.com", "DescribeDBSnapshots"),
    ("lambda.amazonaws.com", "ListFunctions20150331"),
    ("lambda.amazonaws.com", "GetFunction20150331v2"),
    ("kms.amazonaws.com", "ListKeys"),
    ("kms.amazonaws.com", "ListAliases"),
    ("secretsmanager.amazonaws.com", "ListSecrets"),
    ("dynamodb.amazonaws.com", "ListTables"),
    ("cloudtrail.amazonaws.com", "DescribeTrails"),
    ("cloudtrail.amazonaws.com", "GetTrailStatus"),
    ("organizations.amazonaws.com", "DescribeOrganization"),
    ("sts.amazonaws.com", "GetCallerIdentity"),
];

fn principal(account: &str, who: &str) -> String {
    if let Some(role) = who.strip_prefix("role/") {
        format!("arn:aws:sts::{account}:assumed-role/{role}/session")
    } else {
        format!("arn:aws:iam::{account}:{who}")
    }
}

#[allow(clippy::too_many_arguments)]
fn cloudtrail(
    rng: &mut Rng,
    time: i64,
    account: &str,
    region: &str,
    who: &str,
    source: &str,
    name: &str,
    request: serde_json::Value,
    error: Option<&str>,
) -> Vec<u8> {
    let kind = if who.starts_with("role/") {
        "AssumedRole"
    } else {
        "IAMUser"
    };
    let mut r = json!({
        "eventVersion": "1.09",
        "userIdentity": {
            "type": kind,
            "principalId": format!("AIDA{:016X}", rng.next() & 0xffff),
            "arn": principal(account, who),
            "accountId": account,
        },
        "eventTime": format_rfc3339_ms(time).replace(".000Z", "Z"),
        "eventSource": source,
        "eventName": name,
        "awsRegion": region,
        "sourceIPAddress": format!("203.0.113.{}", rng.below(250) + 1),
        "userAgent": "aws-cli/2.15.0 Python/3.11 Linux/6.1",
        "requestParameters": request,
        "responseElements": null,
        "requestID": format!("{:016x}", rng.next()),
        "eventID": format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", rng.next() as u32, rng.next() as u16, rng.next() as u16 & 0xfff, rng.next() as u16 & 0xfff, rng.next() & 0xffff_ffff_ffff),
        "readOnly": name.starts_with("Describe") || name.starts_with("List") || name.starts_with("Get"),
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": account,
        "eventCategory": "Management",
    });
    if let Some(code) = error {
        r["errorCode"] = json!(code);
    }
    serde_json::to_vec(&r).expect("a json! value serializes")
}

fn entra(
    rng: &mut Rng,
    time: i64,
    activity: &str,
    upn: &str,
    old_state: &str,
    new_state: &str,
) -> Vec<u8> {
    let id = format!("Directory_{:016x}", rng.next());
    let modified = if old_state.is_empty() {
        json!([])
    } else {
        json!([{
            "displayName": "ConditionalAccessPolicy",
            "oldValue": json!({"state": old_state, "displayName": "Require MFA for admins"}).to_string(),
            "newValue": json!({"state": new_state, "displayName": "Require MFA for admins"}).to_string(),
        }])
    };
    let r = json!({
        "time": format_rfc3339_ms(time),
        "resourceId": format!("/tenants/{TENANT}/providers/Microsoft.aadiam"),
        "operationName": activity,
        "operationVersion": "1.0",
        "category": "AuditLogs",
        "tenantId": TENANT,
        "resultSignature": "None",
        "durationMs": 0,
        "callerIpAddress": "198.51.100.7",
        "correlationId": format!("{:016x}", rng.next()),
        "Level": 4,
        "properties": {
            "id": id,
            "category": "Policy",
            "correlationId": format!("{:016x}", rng.next()),
            "result": "success",
            "resultReason": "",
            "activityDisplayName": activity,
            "activityDateTime": format_rfc3339_ms(time),
            "loggedByService": if old_state.is_empty() { "Core Directory" } else { "Conditional Access" },
            "operationType": "Update",
            "initiatedBy": {"user": {"id": "5e1c9c1e-0000-4000-8000-000000000001", "userPrincipalName": upn, "ipAddress": "198.51.100.7"}},
            "targetResources": [{"id": "0b5d8a3e-1111-4000-8000-000000000002", "displayName": "Require MFA for admins", "type": "Policy", "modifiedProperties": modified}],
            "additionalDetails": [],
        }
    });
    serde_json::to_vec(&r).expect("a json! value serializes")
}

/// The raw records of a scenario, in event-time order.
pub fn scenario_stream(s: &Scenario) -> Vec<Vec<u8>> {
    let mut rng = Rng(s.seed);
    let mut out: Vec<(i64, Vec<u8>)> = Vec::new();
    let minute = 60_000i64;
    let people = ["user/alice", "user/bob", "user/carol", "user/dave"];
    let apps = [
        "role/web-app",
        "role/batch-etl",
        "role/ci-deployer",
        "role/metrics-agent",
    ];
    let silenced_after = s.start_ms + 90 * minute;
    for m in 0..s.minutes {
        for _ in 0..s.benign_per_minute {
            let t = s.start_ms + m * minute + rng.below(minute as u64) as i64;
            let account = *rng.pick(&ACCOUNTS);
            let region = *rng.pick(&REGIONS);
            if s.attacks && account == "222222222222" && region == "us-east-1" && t > silenced_after
            {
                continue;
            }
            let who = if rng.below(4) == 0 {
                *rng.pick(&people)
            } else {
                *rng.pick(&apps)
            };
            let (source, name) = *rng.pick(&READS);
            let req = json!({"maxResults": 100});
            out.push((
                t,
                cloudtrail(&mut rng, t, account, region, who, source, name, req, None),
            ));
        }
        // Each app role reads its own secret every ~10 minutes.
        if m % 10 == 0 {
            for (i, app) in apps.iter().enumerate() {
                let t = s.start_ms + m * minute + (i as i64) * 1000;
                let account = ACCOUNTS[i % 3];
                if s.attacks && account == "222222222222" && t > silenced_after {
                    continue;
                }
                let req = json!({"secretId": format!("prod/{}/db", &app[5..])});
                out.push((
                    t,
                    cloudtrail(
                        &mut rng,
                        t,
                        account,
                        "us-east-1",
                        app,
                        "secretsmanager.amazonaws.com",
                        "GetSecretValue",
                        req,
                        None,
                    ),
                ));
            }
        }
        // Routine directory work in the tenant.
        if m % 5 == 0 {
            let t = s.start_ms + m * minute + 30_000;
            out.push((
                t,
                entra(
                    &mut rng,
                    t,
                    "Update user",
                    "helpdesk@contoso.example",
                    "",
                    "",
                ),
            ));
        }
    }
    if s.attacks {
        let a = "111111111111";
        let t0 = s.start_ms + 60 * minute;
        for i in 0..40 {
            let t = t0 + i * 3000;
            let req = json!({"secretId": format!("arn:aws:secretsmanager:us-east-1:{a}:secret:prod/service-{i:02}")});
            out.push((
                t,
                cloudtrail(
                    &mut rng,
                    t,
                    a,
                    "us-east-1",
                    "user/mallory",
                    "secretsmanager.amazonaws.com",
                    "GetSecretValue",
                    req,
                    None,
                ),
            ));
        }
        let t = t0 + 125_000;
        let names: Vec<String> = (0..10)
            .map(|i| format!("/prod/credentials/key-{i}"))
            .collect();
        out.push((
            t,
            cloudtrail(
                &mut rng,
                t,
                a,
                "us-east-1",
                "user/mallory",
                "ssm.amazonaws.com",
                "GetParameters",
                json!({"names": names, "withDecryption": true}),
                None,
            ),
        ));

        let t0 = s.start_ms + 75 * minute;
        for (i, (source, name)) in RECON.iter().enumerate() {
            let t = t0 + i as i64 * 6000;
            let err = (i % 7 == 3).then_some("AccessDenied");
            out.push((
                t,
                cloudtrail(
                    &mut rng,
                    t,
                    a,
                    "eu-west-1",
                    "role/web-app-compromised",
                    source,
                    name,
                    json!({}),
                    err,
                ),
            ));
        }

        let t = silenced_after - 5_000;
        out.push((
            t,
            cloudtrail(
                &mut rng,
                t,
                "222222222222",
                "us-east-1",
                "role/ci-deployer",
                "cloudtrail.amazonaws.com",
                "StopLogging",
                json!({"name": "arn:aws:cloudtrail:us-east-1:222222222222:trail/org-trail"}),
                None,
            ),
        ));

        let t0 = s.start_ms + 120 * minute;
        let regions = [
            "ap-southeast-1",
            "sa-east-1",
            "eu-north-1",
            "ap-northeast-3",
            "sa-east-1",
            "ap-southeast-1",
        ];
        for (i, region) in regions.iter().enumerate() {
            let t = t0 + i as i64 * 20_000;
            let req =
                json!({"serviceCode": "ec2", "quotaCode": "L-DB2E81BA", "desiredValue": 256.0});
            out.push((
                t,
                cloudtrail(
                    &mut rng,
                    t,
                    "333333333333",
                    region,
                    "user/eve",
                    "servicequotas.amazonaws.com",
                    "RequestServiceQuotaIncrease",
                    req,
                    None,
                ),
            ));
        }

        let t = s.start_ms + 150 * minute;
        out.push((
            t,
            entra(
                &mut rng,
                t,
                "Update conditional access policy",
                "eve@contoso.example",
                "enabled",
                "disabled",
            ),
        ));
    }
    if s.malformed {
        let t = s.start_ms + 30 * minute;
        out.push((
            t,
            b"{\"eventVersion\":\"1.09\",\"eventTime\":\"2026-11-01T00:30:00Z\",\"eventSo".to_vec(),
        ));
        out.push((t, b"{\"hello\":\"not an audit record\"}".to_vec()));
        out.push((t, b"\xff\xfe not utf-8".to_vec()));
    }
    out.sort_by_key(|(t, _)| *t);
    out.into_iter().map(|(_, r)| r).collect()
}
