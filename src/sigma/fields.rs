//! Log-source routes and the built-in field mapping: where a Sigma field name is in the raw record.
//!
//! SigmaHQ's cloud rules name fields as the SIEM they were written for stores them. Each rule's
//! `logsource` (product, service) picks a [`Route`]; each decoded event gets the route of its
//! provider and log (`CloudEvent::cloud_provider`, `metadata_log_name`), so an event is matched
//! only against its route's rules. [`Route::resolve`] turns a rule's field name into a path in the
//! raw record of that route:
//!
//! - AWS CloudTrail: the raw names, unchanged (`eventSource`, `requestParameters.x`).
//! - GCP audit: the Filebeat names `gcp.audit.*` → `protoPayload.*`; `data.protoPayload.*` →
//!   `protoPayload.*` (rules written for a `data` wrapper).
//! - Azure Activity Log, Entra ID (audit, sign-in, risk detection, PIM), Microsoft 365: key names
//!   compare case-insensitively (Log Analytics spells `OperationName`, the diagnostic export
//!   `operationName`), a name absent at the top is looked for under `properties.` (the
//!   diagnostic export nests the Log Analytics columns there), and the Log Analytics `*Value`
//!   columns map to the raw keys (`OperationNameValue` → `operationName`).
//! - Google Workspace (Admin SDK Reports shape): `eventName` → the event's name, `eventService`
//!   → `id.applicationName`, any other name → the event's parameter of that name (upper case).
//!
//! A field that no raw record of its route can hold is reported by [`Route::unmappable`], and
//! its rule is not loaded (with that reason) rather than loaded never to match.

use crate::event::{CloudEvent, Provider};

/// Where rules and events meet: one per (product, service) family that cloudwarden decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    AwsCloudTrail,
    AzureActivity,
    EntraAudit,
    EntraSignin,
    EntraRisk,
    EntraPim,
    GcpAudit,
    WorkspaceAdmin,
    WorkspaceLogin,
    M365,
}

impl Route {
    pub const ALL: [Route; 10] = [
        Route::AwsCloudTrail,
        Route::AzureActivity,
        Route::EntraAudit,
        Route::EntraSignin,
        Route::EntraRisk,
        Route::EntraPim,
        Route::GcpAudit,
        Route::WorkspaceAdmin,
        Route::WorkspaceLogin,
        Route::M365,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// The Sigma `logsource` this route serves, as `product/service`.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::AwsCloudTrail => "aws/cloudtrail",
            Route::AzureActivity => "azure/activitylogs",
            Route::EntraAudit => "azure/auditlogs",
            Route::EntraSignin => "azure/signinlogs",
            Route::EntraRisk => "azure/riskdetection",
            Route::EntraPim => "azure/pim",
            Route::GcpAudit => "gcp/gcp.audit",
            Route::WorkspaceAdmin => "gcp/google_workspace.admin",
            Route::WorkspaceLogin => "gcp/google_workspace.login",
            Route::M365 => "m365/*",
        }
    }

    /// The route of a rule's `logsource`, or `None` for a log source cloudwarden does not decode.
    pub fn of_logsource(product: Option<&str>, service: Option<&str>) -> Option<Route> {
        let product = product?.to_ascii_lowercase();
        let service = service.map(str::to_ascii_lowercase);
        Some(match (product.as_str(), service.as_deref()) {
            ("aws", Some("cloudtrail")) => Route::AwsCloudTrail,
            ("azure", Some("activitylogs")) => Route::AzureActivity,
            ("azure", Some("auditlogs")) => Route::EntraAudit,
            ("azure", Some("signinlogs")) => Route::EntraSignin,
            ("azure", Some("riskdetection")) => Route::EntraRisk,
            ("azure", Some("pim")) => Route::EntraPim,
            ("gcp", Some("gcp.audit")) => Route::GcpAudit,
            ("gcp", Some("google_workspace.admin")) => Route::WorkspaceAdmin,
            ("gcp", Some("google_workspace.login")) => Route::WorkspaceLogin,
            ("m365", _) => Route::M365,
            _ => return None,
        })
    }

    /// The route of a decoded event, or `None` (a normalized `cloud_event.v1` record has no raw
    /// provider fields to match; a Workspace application without Sigma rules).
    pub fn of_event(ev: &CloudEvent<'_>) -> Option<Route> {
        let log = ev.metadata_log_name.as_ref();
        Some(match ev.cloud_provider {
            Provider::Aws => Route::AwsCloudTrail,
            Provider::Gcp => Route::GcpAudit,
            Provider::Azure => Route::AzureActivity,
            Provider::EntraId => {
                let l = log.to_ascii_lowercase();
                if l.contains("signin") {
                    Route::EntraSignin
                } else if l.contains("risk") {
                    Route::EntraRisk
                } else if l.contains("pim") || l.contains("privileged") {
                    Route::EntraPim
                } else {
                    Route::EntraAudit
                }
            }
            Provider::GoogleWorkspace => match log {
                "admin" => Route::WorkspaceAdmin,
                "login" => Route::WorkspaceLogin,
                _ => return None,
            },
            Provider::O365 => Route::M365,
        })
    }

    /// Key names compare case-insensitively, with a `properties.` fallback.
    pub fn is_microsoft(self) -> bool {
        matches!(
            self,
            Route::AzureActivity
                | Route::EntraAudit
                | Route::EntraSignin
                | Route::EntraRisk
                | Route::EntraPim
                | Route::M365
        )
    }

    /// Why a field can never be found in this route's raw records, if so.
    pub fn unmappable(self, field: &str) -> Option<String> {
        match self {
            Route::WorkspaceAdmin | Route::WorkspaceLogin if field.starts_with("protoPayload.") => {
                match field {
                    "protoPayload.metadata.event.eventName" => None,
                    _ => Some(format!(
                        "unmapped field `{field}`: Workspace records (Admin SDK Reports) have no \
                         Cloud Logging protoPayload"
                    )),
                }
            }
            _ => None,
        }
    }

    /// The raw path (dot-separated) for a Sigma field name on this route.
    pub fn resolve(self, field: &str) -> Mapped<'_> {
        match self {
            Route::AwsCloudTrail => Mapped::Path(std::borrow::Cow::Borrowed(field)),
            Route::GcpAudit => {
                if let Some(rest) = field.strip_prefix("gcp.audit.") {
                    let path = match rest {
                        "method_name" => "protoPayload.methodName",
                        "service_name" => "protoPayload.serviceName",
                        "resource_name" => "protoPayload.resourceName",
                        "authentication_info.principal_email" | "principal_email" => {
                            "protoPayload.authenticationInfo.principalEmail"
                        }
                        "status.code" => "protoPayload.status.code",
                        "request" => "protoPayload.request",
                        "response" => "protoPayload.response",
                        _ => return Mapped::Path(std::borrow::Cow::Owned(snake_to_proto(rest))),
                    };
                    Mapped::Path(std::borrow::Cow::Borrowed(path))
                } else if let Some(rest) = field.strip_prefix("data.") {
                    Mapped::Path(std::borrow::Cow::Borrowed(rest))
                } else {
                    Mapped::Path(std::borrow::Cow::Borrowed(field))
                }
            }
            Route::WorkspaceAdmin | Route::WorkspaceLogin => match field {
                "eventName" | "protoPayload.metadata.event.eventName" => Mapped::EventName,
                "eventService" => Mapped::Path(std::borrow::Cow::Borrowed("id.applicationName")),
                f if f.contains('.') => Mapped::Path(std::borrow::Cow::Borrowed(f)),
                f => Mapped::Parameter(f),
            },
            Route::AzureActivity
            | Route::EntraAudit
            | Route::EntraSignin
            | Route::EntraRisk
            | Route::EntraPim => {
                let path = match field {
                    "OperationNameValue" => "operationName",
                    "CategoryValue" => "category",
                    "ResourceProviderValue" => "resourceProviderName",
                    f => f,
                };
                Mapped::Path(std::borrow::Cow::Borrowed(path))
            }
            Route::M365 => {
                // The SIEM shape the threat_management rules were written for.
                let path = match field {
                    "eventSource" => "Workload",
                    "eventName" => "Name",
                    "status" => "ResultStatus",
                    f => f,
                };
                Mapped::Path(std::borrow::Cow::Borrowed(path))
            }
        }
    }
}

/// `status.code` style Filebeat names → protoPayload camelCase (`resource_name` → `resourceName`).
fn snake_to_proto(rest: &str) -> String {
    let mut out = String::from("protoPayload.");
    let mut upper = false;
    for c in rest.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Where a Sigma field is, after mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped<'a> {
    /// A dot-separated path in the raw record.
    Path(std::borrow::Cow<'a, str>),
    /// The event's own name (Workspace: one record holds several events).
    EventName,
    /// A Workspace event parameter, by name (compared case-insensitively).
    Parameter(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logsources_route() {
        assert_eq!(
            Route::of_logsource(Some("aws"), Some("cloudtrail")),
            Some(Route::AwsCloudTrail)
        );
        assert_eq!(
            Route::of_logsource(Some("m365"), Some("threat_management")),
            Some(Route::M365)
        );
        assert_eq!(Route::of_logsource(Some("okta"), Some("okta")), None);
        assert_eq!(Route::of_logsource(None, Some("cloudtrail")), None);
    }

    #[test]
    fn gcp_filebeat_names_map_to_proto_payload() {
        assert_eq!(
            Route::GcpAudit.resolve("gcp.audit.method_name"),
            Mapped::Path("protoPayload.methodName".into())
        );
        assert_eq!(
            Route::GcpAudit.resolve("gcp.audit.resource_location"),
            Mapped::Path("protoPayload.resourceLocation".into())
        );
        assert_eq!(
            Route::GcpAudit.resolve("data.protoPayload.serviceName"),
            Mapped::Path("protoPayload.serviceName".into())
        );
    }
}
