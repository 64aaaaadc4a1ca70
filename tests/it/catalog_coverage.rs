//! Every raw event name of `/work/shared/detection/EVENT_CATALOG.md` §1–§9 classifies as its
//! behaviour in the default catalog.
//!
//! Each row builds the `CloudEvent` the way the decoders produce it: AWS `eventSource` +
//! `eventName` as in the raw log (API-version suffixes kept: `UpdateFunctionCode20150331v2`);
//! GCP `serviceName` + full `methodName`; Azure `operationName` upper-cased; Entra
//! `activityDisplayName`; O365 `Operation` with its trailing `.`; Workspace the event name. The
//! request fields the documented predicate needs are set, and the test asserts that
//! `classify(&ev).has(expected)`. All gaps are collected and reported together.
//!
//! Rows of EVENT_CATALOG.md that are deliberately NOT in the table:
//! - §1 "Silence of a log source": names no event (the signal is the absence of records).
//! - §3 Entra ID Graph activity logs: "Graph URL paths" and recon user agents, not operations.
//! - §5 AWS "any non-read-only call in a region from a static list" and GCP "resource
//!   `*.insert`/`*.create` outside approved region prefixes": no concrete operation; a region
//!   allow-list, not a catalog entry.
//! - §8 Okta `policy.lifecycle.*` / `policy.rule.*`: Okta is outside our six providers.
//! - §2 Azure Key Vault Activity-Log *change* operations
//!   (`MICROSOFT.KEYVAULT/VAULTS/SECRETS/{WRITE,DELETE,BACKUP/ACTION,PURGE/ACTION,UPDATE/ACTION,
//!   SETSECRET/ACTION}`): the catalog itself says "write-side, not reads"; `secret_fetch` feeds
//!   `secret_fetch_rate`, which counts secret *reads*, so they are not mapped to it.
//! - §4 GCP `v1.compute.instances.insert` / `beta.compute.instances.insert` ("across many zones",
//!   "with guestAccelerators") and Azure `MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE`,
//!   `MICROSOFT.RESOURCES/DEPLOYMENTS/WRITE` ("volume / expensive SKUs"): ordinary high-volume
//!   resource creation whose signal is a volume/zone-spread window, and no request field says
//!   "GPU" or "expensive SKU". As `quota_change` they would trip that detector's
//!   quota-request thresholds (5 requests or 3 regions per hour) on routine deployments.
//!
//! Names the catalog lists under one section but deliberately classifies as another behaviour
//! are asserted as that behaviour (and noted on the row): secret-store enumeration
//! (`ListSecrets`, `DescribeSecret`, GCP `GetSecret`/`List*`, Key Vault `*List`, `VaultGet`) is
//! `discovery`, not `secret_fetch` (EVENT_CATALOG.md: "enumeration preceding reads"; the
//! secret-fetch rate counts reads); §4 `GetServiceQuota` is a read ("see discovery").

use cloudwarden::catalog::{Behaviour, Catalog};
use cloudwarden::event::{CloudEvent, Outcome, Provider};
use std::borrow::Cow;

use Behaviour::*;
use Provider::*;

/// A request-field (or outcome) setup that satisfies a documented predicate.
#[derive(Debug, Clone, Copy)]
enum Set {
    MgmtEvents(bool),
    Enabled(bool),
    SinkDisabled,
    LogFileValidation(bool),
    MultiRegion(bool),
    ExpirationDays(i64),
    WithDecryption(bool),
    AuditConfigRemoved,
    Setting(&'static str),
    NewState(&'static str),
    Resource(&'static str),
    /// CloudTrail `errorCode: AccessDenied`.
    AwsDenied,
    /// GCP `status.code: 7` (PERMISSION_DENIED).
    GcpDenied,
}

type Row = (
    Provider,
    &'static str,
    &'static str,
    &'static [Set],
    Behaviour,
);

const N: &[Set] = &[];

fn event(provider: Provider, service: &str, op: &str, setup: &[Set]) -> CloudEvent<'static> {
    let mut ev = CloudEvent::new(
        1_700_000_000_000,
        provider,
        Cow::Borrowed("scope-1"),
        Cow::Owned(service.to_owned()),
        Cow::Owned(op.to_owned()),
        Cow::Borrowed("principal-1"),
    );
    let r = &mut ev.api_request;
    for s in setup {
        match *s {
            Set::MgmtEvents(v) => r.include_management_events = Some(v),
            Set::Enabled(v) => r.enabled = Some(v),
            Set::SinkDisabled => r.sink_disabled = Some(true),
            Set::LogFileValidation(v) => r.log_file_validation = Some(v),
            Set::MultiRegion(v) => r.multi_region = Some(v),
            Set::ExpirationDays(d) => r.expiration_days = Some(d),
            Set::WithDecryption(v) => r.with_decryption = Some(v),
            Set::AuditConfigRemoved => r.audit_config_removed = Some(true),
            Set::Setting(n) => r.setting_name = Some(Cow::Borrowed(n)),
            Set::NewState(v) => r.policy_new_state = Some(Cow::Borrowed(v)),
            Set::Resource(_) | Set::AwsDenied | Set::GcpDenied => {}
        }
    }
    for s in setup {
        match *s {
            Set::Resource(res) => ev.resources.push(Cow::Borrowed(res)),
            Set::AwsDenied => {
                ev.status = Outcome::Failure;
                ev.status_code = Some(Cow::Borrowed("AccessDenied"));
            }
            Set::GcpDenied => {
                ev.status = Outcome::Failure;
                ev.status_code = Some(Cow::Borrowed("7"));
            }
            _ => {}
        }
    }
    ev
}

fn matched(catalog: &Catalog, ev: &CloudEvent<'_>) -> Vec<&'static str> {
    let m = catalog.classify(ev);
    Behaviour::ALL
        .into_iter()
        .filter(|b| m.has(*b))
        .map(Behaviour::as_str)
        .collect()
}

const AZ_INS: &str = "Microsoft.Insights";
const AZ_KV: &str = "Microsoft.KeyVault";
const AZ_AUTO: &str = "Microsoft.Automation";
const CT: &str = "cloudtrail.amazonaws.com";
const S3: &str = "s3.amazonaws.com";
const EC2: &str = "ec2.amazonaws.com";
const IAM: &str = "iam.amazonaws.com";
const LAMBDA: &str = "lambda.amazonaws.com";
const CFG: &str = "config.amazonaws.com";
const GD: &str = "guardduty.amazonaws.com";
const MACIE: &str = "macie2.amazonaws.com";
const WAF: &str = "wafv2.amazonaws.com";
const SM: &str = "secretsmanager.amazonaws.com";
const LOGGING: &str = "logging.googleapis.com";
const CRM: &str = "cloudresourcemanager.googleapis.com";
const GSM: &str = "secretmanager.googleapis.com";
const ACM: &str = "accesscontextmanager.googleapis.com";
const CORE: &str = "Core Directory";
const EXO: &str = "Exchange";
const AAD: &str = "AzureActiveDirectory";
const ADMIN: &str = "admin";

#[rustfmt::skip]
const ROWS: &[Row] = &[
    // ------------------------------------------------------------ §1 log_disable — AWS
    (Aws, CT, "StopLogging", N, LogDisable),
    (Aws, CT, "DeleteTrail", N, LogDisable),
    (Aws, CT, "UpdateTrail", &[Set::LogFileValidation(false)], LogDisable),
    (Aws, CT, "UpdateTrail", &[Set::MultiRegion(false)], LogDisable),
    (Aws, CT, "PutEventSelectors", &[Set::MgmtEvents(false)], LogDisable),
    (Aws, S3, "PutBucketLifecycle", &[Set::ExpirationDays(1)], LogDisable),
    (Aws, S3, "PutBucketLogging", &[Set::Enabled(false)], LogDisable),
    (Aws, EC2, "DeleteFlowLogs", N, LogDisable),
    (Aws, "route53resolver.amazonaws.com", "DeleteResolverQueryLogConfig", N, LogDisable),
    (Aws, "logs.amazonaws.com", "DeleteLogGroup", N, LogDisable),
    (Aws, "logs.amazonaws.com", "DeleteLogStream", N, LogDisable),
    (Aws, CFG, "StopConfigurationRecorder", N, LogDisable),
    (Aws, CFG, "DeleteConfigurationRecorder", N, LogDisable),
    (Aws, CFG, "DeleteDeliveryChannel", N, LogDisable),
    (Aws, "rds.amazonaws.com", "StopActivityStream", N, LogDisable),
    (Aws, "eks.amazonaws.com", "UpdateClusterConfig", &[Set::Enabled(false)], LogDisable),
    (Aws, "bedrock.amazonaws.com", "DeleteModelInvocationLoggingConfiguration", N, LogDisable),
    (Aws, "bedrock.amazonaws.com", "PutModelInvocationLoggingConfiguration", N, LogDisable),
    (Aws, "organizations.amazonaws.com", "LeaveOrganization", N, LogDisable),
    // "attempt counts": the Stratus detonation is AccessDenied.
    (Aws, "organizations.amazonaws.com", "LeaveOrganization", &[Set::AwsDenied], LogDisable),
    (Aws, GD, "DeletePublishingDestination", N, LogDisable),
    // ------------------------------------------------------------ §1 log_disable — GCP
    (Gcp, LOGGING, "google.logging.v2.ConfigServiceV2.DeleteSink", N, LogDisable),
    (Gcp, LOGGING, "google.logging.v2.ConfigServiceV2.UpdateSink", &[Set::SinkDisabled], LogDisable),
    (Gcp, LOGGING, "google.logging.v2.ConfigServiceV2.DeleteBucket", N, LogDisable),
    // "any method containing Update" (PA gcp_logging_settings_modified)
    (Gcp, LOGGING, "google.logging.v2.ConfigServiceV2.UpdateBucket", N, LogDisable),
    (Gcp, LOGGING, "google.logging.v2.ConfigServiceV2.UpdateSink", N, LogDisable),
    (Gcp, LOGGING, "google.logging.v2.ConfigServiceV2.UpdateExclusion", N, LogDisable),
    (Gcp, LOGGING, "google.logging.v2.ConfigServiceV2.UpdateSettings", N, LogDisable),
    (Gcp, CRM, "SetIamPolicy", &[Set::AuditConfigRemoved], LogDisable),
    (Gcp, "compute.googleapis.com", "v1.compute.subnetworks.patch", &[Set::Enabled(false)], LogDisable),
    (Gcp, "dns.googleapis.com", "dns.policies.delete", N, LogDisable),
    (Gcp, "storage.googleapis.com", "storage.buckets.update", &[Set::ExpirationDays(1)], LogDisable),
    (Gcp, "pubsub.googleapis.com", "google.pubsub.v1.Publisher.DeleteTopic", N, LogDisable),
    (Gcp, "pubsub.googleapis.com", "google.pubsub.v1.Subscriber.DeleteSubscription", N, LogDisable),
    // ------------------------------------------------------------ §1 log_disable — Azure
    (Azure, AZ_INS, "MICROSOFT.INSIGHTS/DIAGNOSTICSETTINGS/DELETE", N, LogDisable),
    // the mixed-case export form must match too
    (Azure, AZ_INS, "Microsoft.Insights/diagnosticSettings/delete", N, LogDisable),
    (Azure, AZ_INS, "MICROSOFT.INSIGHTS/DIAGNOSTICSETTINGS/WRITE", N, LogDisable),
    (Azure, "Microsoft.Network", "MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/PROVIDERS/MICROSOFT.INSIGHTS/DIAGNOSTICSETTINGS/WRITE", N, LogDisable),
    (Azure, "Microsoft.OperationalInsights", "MICROSOFT.OPERATIONALINSIGHTS/WORKSPACES/DELETE", N, LogDisable),
    (Azure, "Microsoft.EventHub", "MICROSOFT.EVENTHUB/NAMESPACES/EVENTHUBS/DELETE", N, LogDisable),
    (Azure, "Microsoft.Network", "MICROSOFT.NETWORK/NETWORKWATCHERS/DELETE", N, LogDisable),
    // ------------------------------------------------------------ §1 log_disable — O365
    (O365, EXO, "Set-AdminAuditLogConfig", &[Set::Enabled(false)], LogDisable),
    (O365, EXO, "Set-MailboxAuditBypassAssociation", N, LogDisable),
    (O365, AAD, "Change user license.", &[Set::NewState("DisabledPlans=[M365_ADVANCED_AUDITING]")], LogDisable),

    // ------------------------------------------------------------ §2 secret_fetch
    (Aws, SM, "GetSecretValue", N, SecretFetch),
    // PA also counts denied calls
    (Aws, SM, "GetSecretValue", &[Set::AwsDenied], SecretFetch),
    (Aws, SM, "BatchGetSecretValue", N, SecretFetch),
    // enumeration preceding reads → discovery (see module docs)
    (Aws, SM, "ListSecrets", N, Discovery),
    (Aws, SM, "DescribeSecret", N, Discovery),
    (Aws, "ssm.amazonaws.com", "GetParameter", &[Set::WithDecryption(true)], SecretFetch),
    (Aws, "ssm.amazonaws.com", "GetParameters", &[Set::WithDecryption(true)], SecretFetch),
    (Gcp, GSM, "google.cloud.secretmanager.v1.SecretManagerService.AccessSecretVersion", N, SecretFetch),
    // ADMIN_READ metadata reads → discovery
    (Gcp, GSM, "google.cloud.secretmanager.v1.SecretManagerService.GetSecret", N, Discovery),
    (Gcp, GSM, "google.cloud.secretmanager.v1.SecretManagerService.GetSecretVersion", N, Discovery),
    (Gcp, GSM, "google.cloud.secretmanager.v1.SecretManagerService.ListSecrets", N, Discovery),
    (Gcp, GSM, "google.cloud.secretmanager.v1.SecretManagerService.ListSecretVersions", N, Discovery),
    // Key Vault data plane (AuditEvent), upper-cased by the decoder
    (Azure, AZ_KV, "SECRETGET", N, SecretFetch),
    (Azure, AZ_KV, "SECRETGETDELETED", N, SecretFetch),
    (Azure, AZ_KV, "KEYGET", N, SecretFetch),
    (Azure, AZ_KV, "CERTIFICATEGET", N, SecretFetch),
    (Azure, AZ_KV, "SECRETLIST", N, Discovery),
    (Azure, AZ_KV, "SECRETLISTVERSIONS", N, Discovery),
    (Azure, AZ_KV, "KEYLIST", N, Discovery),
    (Azure, AZ_KV, "CERTIFICATELIST", N, Discovery),
    (Azure, AZ_KV, "VAULTGET", N, Discovery),
    // Key Vault via the Activity Log
    (Azure, AZ_KV, "MICROSOFT.KEYVAULT/VAULTS/SECRETS/GETSECRET/ACTION", N, SecretFetch),
    (Azure, AZ_KV, "MICROSOFT.KEYVAULT/VAULTS/SECRETS/RECOVER/ACTION", N, SecretFetch),
    (Azure, AZ_KV, "MICROSOFT.KEYVAULT/VAULTS/SECRETS/RESTORE/ACTION", N, SecretFetch),
    (Azure, AZ_KV, "MICROSOFT.KEYVAULT/VAULTS/KEYS/READ/ACTION", N, SecretFetch),
    (Azure, AZ_KV, "MICROSOFT.KEYVAULT/VAULTS/KEYS/RESTORE/ACTION", N, SecretFetch),
    (Azure, AZ_KV, "MICROSOFT.KEYVAULT/VAULTS/KEYS/RECOVER/ACTION", N, SecretFetch),
    (Azure, AZ_KV, "MICROSOFT.KEYVAULT/VAULTS/CERTIFICATES/READ", N, SecretFetch),

    // ------------------------------------------------------------ §3 discovery — AWS
    // `Describe*`, `List*`, `Get*`, `Generate*` on any service: one example per prefix
    (Aws, EC2, "DescribeInstances", N, Discovery),
    (Aws, "dynamodb.amazonaws.com", "ListTables", N, Discovery),
    (Aws, "kms.amazonaws.com", "GetKeyPolicy", N, Discovery),
    (Aws, IAM, "GenerateCredentialReport", N, Discovery),
    // any call with errorCode AccessDenied
    (Aws, EC2, "RunInstances", &[Set::AwsDenied], Discovery),
    (Aws, IAM, "ListAttachedRolePolicies", N, Discovery),
    (Aws, IAM, "ListRoles", N, Discovery),
    (Aws, IAM, "ListGroupsForUser", N, Discovery),
    (Aws, IAM, "ListAttachedUserPolicies", N, Discovery),
    (Aws, IAM, "ListAccessKeys", N, Discovery),
    (Aws, IAM, "ListUsers", N, Discovery),
    (Aws, IAM, "GetGroup", N, Discovery),
    (Aws, IAM, "GetGroupPolicy", N, Discovery),
    (Aws, IAM, "ListAttachedGroupPolicies", N, Discovery),
    (Aws, IAM, "ListGroupPolicies", N, Discovery),
    (Aws, IAM, "ListGroups", N, Discovery),
    (Aws, S3, "ListBuckets", N, Discovery),
    (Aws, S3, "GetBucketAcl", N, Discovery),
    (Aws, S3, "GetBucketPublicAccessBlock", N, Discovery),
    (Aws, S3, "GetBucketPolicy", N, Discovery),
    (Aws, S3, "GetBucketPolicyStatus", N, Discovery),
    (Aws, S3, "GetBucketVersioning", N, Discovery),
    (Aws, "servicequotas.amazonaws.com", "GetServiceQuota", N, Discovery),
    (Aws, "ses.amazonaws.com", "GetAccountSendingEnabled", N, Discovery),
    (Aws, "ses.amazonaws.com", "GetSendQuota", N, Discovery),
    (Aws, "ses.amazonaws.com", "ListIdentities", N, Discovery),
    (Aws, "ses.amazonaws.com", "GetIdentityVerificationAttributes", N, Discovery),
    (Aws, "account.amazonaws.com", "GetAlternateContact", N, Discovery),
    (Aws, "account.amazonaws.com", "GetContactInformation", N, Discovery),
    (Aws, "organizations.amazonaws.com", "DescribeAccount", N, Discovery),
    (Aws, IAM, "GetAccountPasswordPolicy", N, Discovery),
    (Aws, "rds.amazonaws.com", "DescribeDBSnapshots", N, Discovery),
    (Aws, "rds.amazonaws.com", "DescribeDBClusterSnapshots", N, Discovery),
    (Aws, EC2, "DescribeInstanceAttribute", N, Discovery),
    (Aws, EC2, "DescribeInstanceAttribute", &[Set::AwsDenied], Discovery),
    (Aws, "sts.amazonaws.com", "GetCallerIdentity", N, Discovery),
    // ------------------------------------------------------------ §3 discovery — GCP / Azure
    (Gcp, "storage.googleapis.com", "storage.buckets.list", N, Discovery),
    (Gcp, "storage.googleapis.com", "storage.buckets.listChannels", N, Discovery),
    (Gcp, CRM, "GetIamPolicy", N, Discovery),
    (Gcp, CRM, "google.cloud.resourcemanager.v3.TagKeys.ListTagKeys", N, Discovery),
    (Gcp, CRM, "google.cloud.resourcemanager.v3.TagKeys.ListTagValues", N, Discovery),
    (Gcp, CRM, "google.cloud.resourcemanager.v3.TagBindings.ListEffectiveTags", N, Discovery),
    (Gcp, CRM, "TestIamPermissions", N, Discovery),
    (Gcp, CRM, "projects.testIamPermissions", N, Discovery),
    // any method with status.code = 7
    (Gcp, "compute.googleapis.com", "v1.compute.instances.insert", &[Set::GcpDenied], Discovery),
    (Azure, "Microsoft.Network", "MICROSOFT.NETWORK/PUBLICIPADDRESSES/READ", N, Discovery),
    (Azure, "Microsoft.Compute", "MICROSOFT.COMPUTE/VIRTUALMACHINES/READ", N, Discovery),
    (Azure, "Microsoft.Network", "MICROSOFT.NETWORK/NETWORKSECURITYGROUP/READ", N, Discovery),

    // ------------------------------------------------------------ §4 quota_change
    (Aws, "servicequotas.amazonaws.com", "RequestServiceQuotaIncrease", N, QuotaChange),
    (Aws, "servicequotas.amazonaws.com", "UpdateServiceQuotaIncreaseRequestStatus", N, QuotaChange),
    // `GetServiceQuota` (read; "see discovery") is the §3 row above.
    (Gcp, "cloudquotas.googleapis.com", "google.api.cloudquotas.v1.CloudQuotas.CreateQuotaPreference", N, QuotaChange),
    (Gcp, "cloudquotas.googleapis.com", "google.api.cloudquotas.v1.CloudQuotas.UpdateQuotaPreference", N, QuotaChange),
    (Gcp, "cloudquotas.googleapis.com", "google.api.cloudquotas.v1beta.CloudQuotas.CreateQuotaPreference", N, QuotaChange),
    (Gcp, "cloudquotas.googleapis.com", "google.api.cloudquotas.v1beta.CloudQuotas.UpdateQuotaPreference", N, QuotaChange),
    (Gcp, "cloudquotas.googleapis.com", "google.api.cloudquotas.v1beta.QuotaAdjusterSettingsManager.UpdateQuotaAdjusterSettings", N, QuotaChange),
    (Azure, "Microsoft.Quota", "MICROSOFT.QUOTA/QUOTAS/WRITE", N, QuotaChange),
    (Azure, "Microsoft.Capacity", "MICROSOFT.CAPACITY/RESOURCEPROVIDERS/LOCATIONS/SERVICELIMITS/WRITE", N, QuotaChange),

    // ------------------------------------------------------------ §5 tenant_settings
    (Aws, "account.amazonaws.com", "EnableRegion", N, TenantSettings),
    // PA's test event carries cloudtrail.amazonaws.com
    (Aws, CT, "EnableRegion", N, TenantSettings),
    (Aws, "account.amazonaws.com", "DisableRegion", N, TenantSettings),
    (Aws, "organizations.amazonaws.com", "LeaveOrganization", N, TenantSettings),
    (Aws, "organizations.amazonaws.com", "LeaveOrganization", &[Set::AwsDenied], TenantSettings),
    (Aws, "account.amazonaws.com", "CloseAccount", N, TenantSettings),
    (Aws, "organizations.amazonaws.com", "CloseAccount", N, TenantSettings),
    (Aws, "account.amazonaws.com", "PutAlternateContact", N, TenantSettings),
    (Aws, "account.amazonaws.com", "PutContactInformation", N, TenantSettings),
    (Aws, IAM, "UpdateAccountPasswordPolicy", N, TenantSettings),
    (Aws, IAM, "DeleteAccountPasswordPolicy", N, TenantSettings),
    (Gcp, CRM, "SetIamPolicy", &[Set::Resource("organizations/123456789012")], TenantSettings),
    (Gcp, CRM, "SetIamPolicy", &[Set::Resource("folders/123456789012")], TenantSettings),
    (Gcp, CRM, "google.cloud.resourcemanager.v3.Projects.MoveProject", N, TenantSettings),
    (Gcp, CRM, "projects.move", N, TenantSettings),
    (Gcp, "orgpolicy.googleapis.com", "google.cloud.orgpolicy.v2.OrgPolicy.UpdatePolicy", N, TenantSettings),
    (Gcp, "orgpolicy.googleapis.com", "google.cloud.orgpolicy.v2.OrgPolicy.DeletePolicy", N, TenantSettings),
    (Gcp, "serviceusage.googleapis.com", "google.api.serviceusage.v1.ServiceUsage.DisableService", N, TenantSettings),
    (Azure, "Microsoft.Authorization", "MICROSOFT.AUTHORIZATION/ELEVATEACCESS/ACTION", N, TenantSettings),
    (Azure, "Microsoft.Subscription", "MICROSOFT.SUBSCRIPTION/UPDATETENANT/ACTION", N, TenantSettings),
    (EntraId, CORE, "Set federation settings on domain", N, TenantSettings),
    (EntraId, CORE, "Set domain authentication", N, TenantSettings),
    (EntraId, CORE, "Add unverified domain", N, TenantSettings),
    (EntraId, CORE, "Verify domain", N, TenantSettings),
    (EntraId, CORE, "Update authorization policy", N, TenantSettings),
    (EntraId, CORE, "Add a partner to cross-tenant access setting", N, TenantSettings),
    (EntraId, CORE, "Delete partner specific cross-tenant access setting", N, TenantSettings),
    // "inbound/outbound setting changes"
    (EntraId, CORE, "Update a partner cross-tenant access setting", N, TenantSettings),
    (EntraId, CORE, "Update the company default cross-tenant access setting", N, TenantSettings),
    (O365, AAD, "Set Company Information.", N, TenantSettings),
    (O365, AAD, "Update authorization policy.", N, TenantSettings),
    (O365, AAD, "Add a partner to cross-tenant access setting.", N, TenantSettings),
    (O365, "SharePoint", "SharingPolicyChanged", N, TenantSettings),
    (O365, "MicrosoftTeams", "Set-CsTenantFederationConfiguration", N, TenantSettings),
    (O365, "MicrosoftTeams", "Set-CsTeamsClientConfiguration", N, TenantSettings),
    (O365, "MicrosoftTeams", "TeamsTenantSettingChanged", N, TenantSettings),
    (GoogleWorkspace, ADMIN, "CHANGE_APPLICATION_SETTING", &[Set::Setting("Password Management - Enforce strong password"), Set::NewState("false")], TenantSettings),
    (GoogleWorkspace, ADMIN, "CHANGE_APPLICATION_SETTING", &[Set::Setting("Password Management - Enable password reuse"), Set::NewState("true")], TenantSettings),
    (GoogleWorkspace, ADMIN, "CREATE_APPLICATION_SETTING", &[Set::Setting("Password Management - Minimum password length")], TenantSettings),
    (GoogleWorkspace, ADMIN, "CHANGE_APPLICATION_SETTING", &[Set::Setting("ENABLE_G_SUITE_MARKETPLACE")], TenantSettings),
    (GoogleWorkspace, ADMIN, "CHANGE_APPLICATION_SETTING", &[Set::Setting("Apps Access Setting Allowlist access"), Set::NewState("ALLOW_ALL")], TenantSettings),
    (GoogleWorkspace, ADMIN, "ADD_TRUSTED_DOMAINS", N, TenantSettings),
    (GoogleWorkspace, ADMIN, "REMOVE_TRUSTED_DOMAINS", N, TenantSettings),
    (GoogleWorkspace, ADMIN, "CHANGE_CALENDAR_SETTING", &[Set::Setting("SHARING_OUTSIDE_DOMAIN")], TenantSettings),
    (GoogleWorkspace, ADMIN, "CREATE_GMAIL_SETTING", &[Set::Setting("MESSAGE_SECURITY_RULE")], TenantSettings),
    (GoogleWorkspace, ADMIN, "DELETE_GMAIL_SETTING", &[Set::Setting("MESSAGE_SECURITY_RULE")], TenantSettings),
    (GoogleWorkspace, ADMIN, "CHANGE_EMAIL_SETTING", &[Set::Setting("MESSAGE_SECURITY_RULE")], TenantSettings),
    (GoogleWorkspace, ADMIN, "ENFORCE_STRONG_AUTHENTICATION", &[Set::NewState("false")], TenantSettings),
    (GoogleWorkspace, ADMIN, "ALLOW_STRONG_AUTHENTICATION", &[Set::NewState("false")], TenantSettings),

    // ------------------------------------------------------------ §6 event_trigger
    (Aws, LAMBDA, "CreateEventSourceMapping20150331", N, EventTrigger),
    (Aws, LAMBDA, "CreateEventSourceMapping", N, EventTrigger),
    (Aws, LAMBDA, "UpdateEventSourceMapping20150331", N, EventTrigger),
    (Aws, LAMBDA, "DeleteEventSourceMapping20150331", N, EventTrigger),
    (Aws, LAMBDA, "AddPermission20150331v2", N, EventTrigger),
    (Aws, LAMBDA, "AddPermission20150331", N, EventTrigger),
    (Aws, "events.amazonaws.com", "DeleteRule", N, EventTrigger),
    (Aws, "events.amazonaws.com", "DisableRule", N, EventTrigger),
    (Gcp, "pubsub.googleapis.com", "google.pubsub.v1.Subscriber.CreateSubscription", N, EventTrigger),
    (Azure, AZ_AUTO, "MICROSOFT.AUTOMATION/AUTOMATIONACCOUNTS/WEBHOOKS/WRITE", N, EventTrigger),
    (Azure, AZ_AUTO, "MICROSOFT.AUTOMATION/AUTOMATIONACCOUNTS/WEBHOOKS/ACTION", N, EventTrigger),
    // REST form `operationName.localizedValue`, upper-cased
    (Azure, AZ_AUTO, "CREATE OR UPDATE AN AZURE AUTOMATION WEBHOOK", N, EventTrigger),
    (Azure, AZ_AUTO, "MICROSOFT.AUTOMATION/AUTOMATIONACCOUNTS/SCHEDULES/WRITE", N, EventTrigger),

    // ------------------------------------------------------------ §7 impair_defenses — AWS
    (Aws, GD, "DeleteDetector", N, ImpairDefenses),
    (Aws, GD, "UpdateDetector", &[Set::Enabled(false)], ImpairDefenses),
    (Aws, GD, "CreateIPSet", &[Set::Enabled(true)], ImpairDefenses),
    (Aws, GD, "UpdateIPSet", &[Set::Enabled(true)], ImpairDefenses),
    (Aws, GD, "DeleteIPSet", N, ImpairDefenses),
    (Aws, GD, "CreateThreatIntelSet", &[Set::Enabled(true)], ImpairDefenses),
    (Aws, GD, "UpdateThreatIntelSet", &[Set::Enabled(true)], ImpairDefenses),
    (Aws, GD, "DeleteThreatIntelSet", N, ImpairDefenses),
    (Aws, GD, "DisassociateFromAdministratorAccount", N, ImpairDefenses),
    (Aws, GD, "DisassociateFromMasterAccount", N, ImpairDefenses),
    (Aws, GD, "DeleteMembers", N, ImpairDefenses),
    (Aws, GD, "StopMonitoringMembers", N, ImpairDefenses),
    (Aws, GD, "DeleteInvitations", N, ImpairDefenses),
    (Aws, GD, "DisassociateMembers", N, ImpairDefenses),
    (Aws, CFG, "DeleteConfigRule", N, ImpairDefenses),
    (Aws, CFG, "DeleteOrganizationConfigRule", N, ImpairDefenses),
    (Aws, CFG, "DeleteConfigurationAggregator", N, ImpairDefenses),
    (Aws, CFG, "DeleteConfigurationRecorder", N, ImpairDefenses),
    (Aws, CFG, "DeleteConformancePack", N, ImpairDefenses),
    (Aws, CFG, "DeleteOrganizationConformancePack", N, ImpairDefenses),
    (Aws, CFG, "DeleteDeliveryChannel", N, ImpairDefenses),
    (Aws, CFG, "DeleteRemediationConfiguration", N, ImpairDefenses),
    (Aws, CFG, "DeleteRetentionConfiguration", N, ImpairDefenses),
    (Aws, CFG, "StopConfigurationRecorder", N, ImpairDefenses),
    (Aws, CFG, "PutDeliveryChannel", N, ImpairDefenses),
    (Aws, CFG, "PutConfigurationRecorder", N, ImpairDefenses),
    (Aws, "securityhub.amazonaws.com", "BatchUpdateFindings", N, ImpairDefenses),
    (Aws, "securityhub.amazonaws.com", "DeleteInsight", N, ImpairDefenses),
    (Aws, "securityhub.amazonaws.com", "UpdateFindings", N, ImpairDefenses),
    (Aws, "securityhub.amazonaws.com", "UpdateInsight", N, ImpairDefenses),
    (Aws, MACIE, "ArchiveFindings", N, ImpairDefenses),
    (Aws, MACIE, "CreateFindingsFilter", N, ImpairDefenses),
    (Aws, MACIE, "DeleteMember", N, ImpairDefenses),
    (Aws, MACIE, "DisassociateFromMasterAccount", N, ImpairDefenses),
    (Aws, MACIE, "DisassociateMember", N, ImpairDefenses),
    (Aws, MACIE, "DisableMacie", N, ImpairDefenses),
    (Aws, MACIE, "DisableOrganizationAdminAccount", N, ImpairDefenses),
    (Aws, MACIE, "UpdateFindingsFilter", N, ImpairDefenses),
    (Aws, MACIE, "UpdateMacieSession", N, ImpairDefenses),
    (Aws, MACIE, "UpdateMemberSession", N, ImpairDefenses),
    (Aws, "macie.amazonaws.com", "UpdateClassificationJob", N, ImpairDefenses),
    (Aws, "monitoring.amazonaws.com", "DeleteAlarms", N, ImpairDefenses),
    (Aws, "monitoring.amazonaws.com", "DisableAlarmActions", N, ImpairDefenses),
    (Aws, "waf.amazonaws.com", "DeleteWebACL", N, ImpairDefenses),
    (Aws, WAF, "DeleteWebACL", N, ImpairDefenses),
    (Aws, WAF, "DeleteRule", N, ImpairDefenses),
    (Aws, WAF, "DeleteRuleGroup", N, ImpairDefenses),
    (Aws, WAF, "DeleteLoggingConfiguration", N, ImpairDefenses),
    (Aws, WAF, "DisassociateWebACL", N, ImpairDefenses),
    (Aws, "access-analyzer.amazonaws.com", "DeleteAnalyzer", N, ImpairDefenses),
    (Aws, EC2, "DisableEbsEncryptionByDefault", N, ImpairDefenses),
    (Aws, "bedrock.amazonaws.com", "DeleteGuardrail", N, ImpairDefenses),
    (Aws, "bedrock.amazonaws.com", "UpdateGuardrail", N, ImpairDefenses),
    (Aws, S3, "DeleteAccountPublicAccessBlock", N, ImpairDefenses),
    // ------------------------------------------------------------ §7 impair_defenses — GCP
    // CH regex `google.cloud.securitycenter.settings.*.Settings.Update`, state DISABLED
    (Gcp, "securitycenter.googleapis.com", "google.cloud.securitycenter.settings.v1beta1.Settings.Update", &[Set::Enabled(false)], ImpairDefenses),
    (Gcp, "securitycenter.googleapis.com", "google.cloud.securitycenter.settings.v1beta1.SecurityCenterSettingsService.UpdateComponentSettings", &[Set::Enabled(false)], ImpairDefenses),
    (Gcp, "securitycentermanagement.googleapis.com", "google.cloud.securitycentermanagement.v1.SecurityCenterManagement.UpdateSecurityCenterService", &[Set::Enabled(false)], ImpairDefenses),
    (Gcp, "compute.googleapis.com", "v1.compute.firewalls.delete", N, ImpairDefenses),
    (Gcp, "compute.googleapis.com", "v1.compute.firewalls.patch", N, ImpairDefenses),
    (Gcp, "compute.googleapis.com", "v1.compute.firewalls.update", N, ImpairDefenses),
    (Gcp, "compute.googleapis.com", "v1.compute.firewalls.insert", N, ImpairDefenses),
    (Gcp, "appengine.googleapis.com", "google.appengine.v1.Firewall.CreateIngressRule", N, ImpairDefenses),
    (Gcp, "appengine.googleapis.com", "google.appengine.v1.Firewall.UpdateIngressRule", N, ImpairDefenses),
    (Gcp, "appengine.googleapis.com", "google.appengine.v1.Firewall.DeleteIngressRule", N, ImpairDefenses),
    // ------------------------------------------------------------ §7 impair_defenses — Azure / Entra / O365 / Workspace
    (Azure, "Microsoft.Security", "MICROSOFT.SECURITY/ALERTSSUPPRESSIONRULES/WRITE", N, ImpairDefenses),
    (Azure, AZ_INS, "MICROSOFT.INSIGHTS/ALERTRULES/DELETE", N, ImpairDefenses),
    (Azure, AZ_INS, "MICROSOFT.INSIGHTS/METRICALERTS/DELETE", N, ImpairDefenses),
    (Azure, AZ_INS, "MICROSOFT.INSIGHTS/ACTIONGROUPS/DELETE", N, ImpairDefenses),
    (Azure, "Microsoft.Network", "MICROSOFT.NETWORK/FIREWALLPOLICIES/DELETE", N, ImpairDefenses),
    (Azure, "Microsoft.Network", "MICROSOFT.NETWORK/FRONTDOORWEBAPPLICATIONFIREWALLPOLICIES/DELETE", N, ImpairDefenses),
    (Azure, "Microsoft.Authorization", "MICROSOFT.AUTHORIZATION/LOCKS/DELETE", N, ImpairDefenses),
    (EntraId, "PIM", "Disable PIM Alert", N, ImpairDefenses),
    (EntraId, "PIM", "Update role setting in PIM", N, ImpairDefenses),
    (O365, EXO, "Remove-AntiPhishPolicy", N, ImpairDefenses),
    (O365, EXO, "Remove-AntiPhishRule", N, ImpairDefenses),
    (O365, EXO, "Disable-AntiPhishRule", N, ImpairDefenses),
    (O365, EXO, "Set-DkimSigningConfig", &[Set::Enabled(false)], ImpairDefenses),
    (O365, EXO, "Remove-DlpPolicy", N, ImpairDefenses),
    (O365, EXO, "Disable-SafeLinksRule", N, ImpairDefenses),
    (O365, EXO, "Remove-MalwareFilterPolicy", N, ImpairDefenses),
    (O365, EXO, "Remove-MalwareFilterRule", N, ImpairDefenses),
    (O365, EXO, "Disable-MalwareFilterRule", N, ImpairDefenses),
    (O365, EXO, "Disable-SafeAttachmentRule", N, ImpairDefenses),
    (O365, EXO, "Remove-TransportRule", N, ImpairDefenses),
    (O365, EXO, "Disable-TransportRule", N, ImpairDefenses),
    // Gmail security sandbox off (PA: SETTING_NAME as below, NEW_VALUE false)
    (GoogleWorkspace, ADMIN, "CHANGE_APPLICATION_SETTING", &[Set::Setting("AttachmentDeepScanningSettingsProto deep_scanning_enabled"), Set::NewState("false")], ImpairDefenses),
    // Gmail enhanced pre-delivery scanning off (PA: NEW_VALUE true)
    (GoogleWorkspace, ADMIN, "CHANGE_APPLICATION_SETTING", &[Set::Setting("DelayedDeliverySettingsProto disable_delayed_delivery_for_suspicious_email"), Set::NewState("true")], ImpairDefenses),
    (GoogleWorkspace, ADMIN, "CREATE_APPLICATION_SETTING", &[Set::Setting("Advanced Protection Program Settings - Allow users to enroll")], ImpairDefenses),
    (GoogleWorkspace, "user_accounts", "titanium_unenroll", N, ImpairDefenses),
    (GoogleWorkspace, ADMIN, "CHANGE_APPLICATION_SETTING", &[Set::Setting("BitLocker Settings"), Set::NewState("Disabled")], ImpairDefenses),

    // ------------------------------------------------------------ §8 conditional_access
    (EntraId, "Conditional Access", "Add conditional access policy", N, ConditionalAccess),
    (EntraId, "Conditional Access", "Update conditional access policy", N, ConditionalAccess),
    (EntraId, "Conditional Access", "Delete conditional access policy", N, ConditionalAccess),
    (EntraId, CORE, "Update policy", N, ConditionalAccess),
    (EntraId, CORE, "Delete policy", N, ConditionalAccess),
    (EntraId, "Authentication Methods", "Authentication Methods Policy Update", N, ConditionalAccess),
    (EntraId, "AAD Management UX", "Update User Risk and MFA Registration Policy", N, ConditionalAccess),
    (EntraId, CORE, "Add member from group", N, ConditionalAccess),
    (EntraId, CORE, "Remove member from group", N, ConditionalAccess),
    (O365, AAD, "Update policy.", N, ConditionalAccess),
    (O365, AAD, "Set Company Information.", &[Set::Setting("StrongAuthenticationPolicy")], ConditionalAccess),
    // Sigma keys on the permissions accesscontextmanager.{accessPolicies,accessLevels,
    // accessZones,authorizedOrgsDescs}.delete; the decoder's operation is the methodName.
    (Gcp, ACM, "google.identity.accesscontextmanager.v1.AccessContextManager.DeleteAccessPolicy", N, ConditionalAccess),
    (Gcp, ACM, "google.identity.accesscontextmanager.v1.AccessContextManager.DeleteAccessLevel", N, ConditionalAccess),
    (Gcp, ACM, "google.identity.accesscontextmanager.v1.AccessContextManager.DeleteServicePerimeter", N, ConditionalAccess),
    (Gcp, ACM, "google.identity.accesscontextmanager.v1.AccessContextManager.DeleteAuthorizedOrgsDesc", N, ConditionalAccess),
    (Gcp, CRM, "SetIamPolicy", &[Set::Resource("organizations/123456789012")], ConditionalAccess),
    (Gcp, CRM, "SetIamPolicy", &[Set::Resource("folders/123456789012")], ConditionalAccess),
    (GoogleWorkspace, ADMIN, "CHANGE_APPLICATION_SETTING", &[Set::Setting("ContextAwareAccess - Access levels")], ConditionalAccess),

    // ------------------------------------------------------------ §9 serverless
    (Aws, LAMBDA, "CreateFunction20150331", N, Serverless),
    (Aws, LAMBDA, "UpdateFunctionCode20150331v2", N, Serverless),
    (Aws, LAMBDA, "UpdateFunctionConfiguration20150331v2", N, Serverless),
    (Aws, LAMBDA, "PublishLayerVersion20181031", N, Serverless),
    (Aws, LAMBDA, "AddLayerVersionPermission20181031", N, Serverless),
    (Aws, LAMBDA, "CreateFunctionUrlConfig20211031", N, Serverless),
    (Aws, LAMBDA, "CreateFunctionUrlConfig", N, Serverless),
    (Aws, LAMBDA, "AddPermission20150331v2", N, Serverless),
    (Aws, LAMBDA, "AddPermission", N, Serverless),
    (Aws, LAMBDA, "CreateAlias", N, Serverless),
    (Aws, LAMBDA, "CreateEventSourceMapping", N, Serverless),
    (Aws, LAMBDA, "CreateFunction", N, Serverless),
    (Aws, LAMBDA, "DeleteAlias", N, Serverless),
    (Aws, LAMBDA, "DeleteEventSourceMapping", N, Serverless),
    (Aws, LAMBDA, "DeleteFunction", N, Serverless),
    (Aws, LAMBDA, "PublishVersion", N, Serverless),
    (Aws, LAMBDA, "RemovePermission", N, Serverless),
    (Aws, LAMBDA, "UpdateAlias", N, Serverless),
    (Aws, LAMBDA, "UpdateEventSourceMapping", N, Serverless),
    (Aws, LAMBDA, "UpdateFunctionCode", N, Serverless),
    (Aws, LAMBDA, "UpdateFunctionConfiguration", N, Serverless),
    (Gcp, "cloudfunctions.googleapis.com", "google.cloud.functions.v1.CloudFunctionsService.CreateFunction", N, Serverless),
    (Gcp, "cloudfunctions.googleapis.com", "google.cloud.functions.v1.CloudFunctionsService.UpdateFunction", N, Serverless),
    (Gcp, "cloudfunctions.googleapis.com", "google.cloud.functions.v1.CloudFunctionsService.DeleteFunction", N, Serverless),
    (Gcp, "run.googleapis.com", "google.cloud.run.v1.Services.CreateService", N, Serverless),
    // "then SetIamPolicy on the service" (PA gcp_cloud_run_set_iam_policy)
    (Gcp, "run.googleapis.com", "google.cloud.run.v1.Services.SetIamPolicy", N, Serverless),
    (Gcp, "deploymentmanager.googleapis.com", "v2.deploymentmanager.deployments.insert", N, Serverless),
    (Azure, AZ_AUTO, "MICROSOFT.AUTOMATION/AUTOMATIONACCOUNTS/WRITE", N, Serverless),
    (Azure, AZ_AUTO, "MICROSOFT.AUTOMATION/AUTOMATIONACCOUNTS/RUNBOOKS/WRITE", N, Serverless),
    (Azure, AZ_AUTO, "MICROSOFT.AUTOMATION/AUTOMATIONACCOUNTS/RUNBOOKS/DRAFT/WRITE", N, Serverless),
    (Azure, AZ_AUTO, "MICROSOFT.AUTOMATION/AUTOMATIONACCOUNTS/RUNBOOKS/PUBLISH/ACTION", N, Serverless),
    (Azure, AZ_AUTO, "MICROSOFT.AUTOMATION/AUTOMATIONACCOUNTS/JOBS/WRITE", N, Serverless),
    (Azure, AZ_AUTO, "CREATE OR UPDATE AN AZURE AUTOMATION RUNBOOK", N, Serverless),
    (Azure, AZ_AUTO, "CREATE OR UPDATE AN AZURE AUTOMATION ACCOUNT", N, Serverless),
    (Azure, "Microsoft.Web", "MICROSOFT.WEB/SITES/HOSTRUNTIME/HOST/ACTION", N, Serverless),
];

/// (provider, service, operation, setup, behaviour that must NOT match; `None` = nothing at all).
type NegativeRow = (
    Provider,
    &'static str,
    &'static str,
    &'static [Set],
    Option<Behaviour>,
);

#[rustfmt::skip]
const NEGATIVE: &[NegativeRow] = &[
    (Aws, CT, "PutEventSelectors", &[Set::MgmtEvents(true)], Some(LogDisable)),
    (Aws, "ssm.amazonaws.com", "GetParameter", N, Some(SecretFetch)),
    (Aws, "ssm.amazonaws.com", "GetParameter", &[Set::WithDecryption(false)], Some(SecretFetch)),
    (Aws, SM, "GetSecretValue", N, Some(Discovery)),
    (Aws, S3, "PutObject", N, None),
    (Aws, S3, "PutBucketLifecycle", &[Set::ExpirationDays(90)], Some(LogDisable)),
    (Aws, CT, "UpdateTrail", &[Set::LogFileValidation(true), Set::MultiRegion(true)], Some(LogDisable)),
    (Gcp, CRM, "SetIamPolicy", &[Set::Resource("projects/p-1")], None),
    (GoogleWorkspace, ADMIN, "CHANGE_APPLICATION_SETTING", &[Set::Setting("AttachmentDeepScanningSettingsProto deep_scanning_enabled"), Set::NewState("true")], Some(ImpairDefenses)),
];

#[test]
fn every_event_catalog_name_classifies_as_its_behaviour() {
    let catalog = Catalog::default_catalog();
    let mut failures = Vec::new();
    for (provider, service, op, setup, expected) in ROWS {
        let ev = event(*provider, service, op, setup);
        if !catalog.classify(&ev).has(*expected) {
            failures.push(format!(
                "  {provider} {service} {op} {setup:?}: expected {expected}, got {:?}",
                matched(&catalog, &ev)
            ));
        }
    }
    for (provider, service, op, setup, forbidden) in NEGATIVE {
        let ev = event(*provider, service, op, setup);
        let m = catalog.classify(&ev);
        let bad = match forbidden {
            Some(b) => m.has(*b),
            None => !m.is_empty(),
        };
        if bad {
            failures.push(format!(
                "  {provider} {service} {op} {setup:?}: must not be {}, got {:?}",
                forbidden.map_or("anything", Behaviour::as_str),
                matched(&catalog, &ev)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} catalog rows are not classified as documented:\n{}",
        failures.len(),
        ROWS.len() + NEGATIVE.len(),
        failures.join("\n")
    );
}
