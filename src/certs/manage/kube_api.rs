//! [`CertApi`] over kube's client: Secrets in the product's namespace, and the caBundle of the
//! two webhook configurations by strategic merge patch (webhooks merge by `name`, so only the
//! caBundle of each named webhook changes).

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::plan::SecretData;
use super::{ApiError, CertApi, StoredSecret, WebhookCa, WebhookKind};

/// The field manager named in every write.
pub const FIELD_MANAGER: &str = "sandbox-admission";

pub struct KubeCertApi {
    client: kube::Client,
}

impl KubeCertApi {
    pub fn new(client: kube::Client) -> Self {
        KubeCertApi { client }
    }
}

fn api_error(e: kube::Error) -> ApiError {
    match &e {
        kube::Error::Api(status) if status.code == 409 => {
            ApiError::Conflict(status.message.clone())
        }
        _ => ApiError::Other(e.to_string()),
    }
}

fn secret(namespace: &str, name: &str, data: &SecretData, rv: Option<&str>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            resource_version: rv.map(str::to_owned),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "sandbox-admission".to_owned(),
            )])),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone())))
                .collect(),
        ),
        ..Default::default()
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    }
}

fn cas<'a>(hooks: impl Iterator<Item = (&'a str, Option<&'a ByteString>)>) -> Vec<WebhookCa> {
    hooks
        .map(|(name, ca)| WebhookCa {
            name: name.to_owned(),
            ca_bundle: ca.map(|b| b.0.clone()).unwrap_or_default(),
        })
        .collect()
}

impl CertApi for KubeCertApi {
    async fn get_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StoredSecret>, ApiError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let found = api.get_opt(name).await.map_err(api_error)?;
        Ok(found.map(|s| StoredSecret {
            data: s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect(),
            resource_version: s.metadata.resource_version,
        }))
    }

    async fn create_secret(
        &self,
        namespace: &str,
        name: &str,
        data: &SecretData,
    ) -> Result<(), ApiError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        api.create(&post_params(), &secret(namespace, name, data, None))
            .await
            .map(drop)
            .map_err(api_error)
    }

    async fn replace_secret(
        &self,
        namespace: &str,
        name: &str,
        data: &SecretData,
        resource_version: Option<&str>,
    ) -> Result<(), ApiError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let object = secret(namespace, name, data, resource_version);
        api.replace(name, &post_params(), &object)
            .await
            .map(drop)
            .map_err(api_error)
    }

    async fn get_webhooks(
        &self,
        kind: WebhookKind,
        name: &str,
    ) -> Result<Option<Vec<WebhookCa>>, ApiError> {
        let client = self.client.clone();
        Ok(match kind {
            WebhookKind::Mutating => Api::<MutatingWebhookConfiguration>::all(client)
                .get_opt(name)
                .await
                .map_err(api_error)?
                .map(|c| {
                    let hooks = c.webhooks.unwrap_or_default();
                    cas(hooks
                        .iter()
                        .map(|w| (w.name.as_str(), w.client_config.ca_bundle.as_ref())))
                }),
            WebhookKind::Validating => Api::<ValidatingWebhookConfiguration>::all(client)
                .get_opt(name)
                .await
                .map_err(api_error)?
                .map(|c| {
                    let hooks = c.webhooks.unwrap_or_default();
                    cas(hooks
                        .iter()
                        .map(|w| (w.name.as_str(), w.client_config.ca_bundle.as_ref())))
                }),
        })
    }

    async fn patch_ca_bundle(
        &self,
        kind: WebhookKind,
        name: &str,
        webhooks: &[String],
        ca_bundle: &[u8],
    ) -> Result<(), ApiError> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(ca_bundle);
        let body = json!({
            "webhooks": webhooks
                .iter()
                .map(|w| json!({"name": w, "clientConfig": {"caBundle": encoded}}))
                .collect::<Vec<_>>()
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        let client = self.client.clone();
        let patched = match kind {
            WebhookKind::Mutating => Api::<MutatingWebhookConfiguration>::all(client)
                .patch(name, &params, &Patch::Strategic(&body))
                .await
                .map(drop),
            WebhookKind::Validating => Api::<ValidatingWebhookConfiguration>::all(client)
                .patch(name, &params, &Patch::Strategic(&body))
                .await
                .map(drop),
        };
        patched.map_err(api_error)
    }
}
