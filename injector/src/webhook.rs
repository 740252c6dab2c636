//! One admission review in, one out: the pods that ask for the sidecar
//! get it as a JSON Patch, malformed asks are refused with the reason, and
//! everything else is admitted untouched.

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};

use crate::inject::{Decision, Defaults, POOL, decide};

/// What the review decided, for the log line (never the pod itself: its
/// environment may hold secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted unchanged.
    Untouched(&'static str),
    /// Admitted with the sidecar.
    Injected,
    /// Refused, with the message the API server shows.
    Refused(String),
}

/// Why a request is not an admission review at all.
#[derive(Debug, thiserror::Error)]
#[error("not an AdmissionReview: {0}")]
pub struct NotAReview(String);

/// Answers the admission review in `body`.
pub fn review(body: &[u8], defaults: &Defaults) -> Result<(Vec<u8>, Outcome), NotAReview> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body).map_err(|e| NotAReview(e.to_string()))?;
    let request: AdmissionRequest<DynamicObject> = review.try_into().map_err(|e| NotAReview(format!("{e}")))?;
    let (response, outcome) = respond(&request, defaults);
    let mut answer = serde_json::to_value(response.into_review()).map_err(|e| NotAReview(e.to_string()))?;
    // The API server reads the patch as Go reads a []byte, from base64;
    // kube-core writes it as a list of numbers.
    if let Some(patch) = answer.pointer_mut("/response/patch")
        && let Some(bytes) =
            patch.as_array().map(|list| list.iter().filter_map(|b| b.as_u64()).map(|b| b as u8).collect::<Vec<u8>>())
    {
        *patch = serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    let answer = serde_json::to_vec(&answer).map_err(|e| NotAReview(e.to_string()))?;
    Ok((answer, outcome))
}

fn respond(request: &AdmissionRequest<DynamicObject>, defaults: &Defaults) -> (AdmissionResponse, Outcome) {
    let response = AdmissionResponse::from(request);
    let Some(object) = request.object.as_ref().filter(|_| request.kind.kind == "Pod") else {
        return (response, Outcome::Untouched("not a pod"));
    };
    // Only pods that asked are read as pods: nothing else can be refused.
    if !object.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(POOL)) {
        return (response, Outcome::Untouched("no lockstep.dev/pool annotation"));
    }
    let refused =
        |response: AdmissionResponse, message: String| (response.deny(message.clone()), Outcome::Refused(message));
    let before = match serde_json::to_value(object) {
        Ok(value) => value,
        Err(e) => return refused(response, format!("Lockstep injector: the pod could not be read: {e}")),
    };
    let pod: Pod = match serde_json::from_value(before.clone()) {
        Ok(pod) => pod,
        Err(e) => return refused(response, format!("Lockstep injector: the pod could not be read: {e}")),
    };
    match decide(&pod, defaults) {
        Ok(Decision::Leave(why)) => (response, Outcome::Untouched(why)),
        Err(refusal) => refused(response, refusal.to_string()),
        Ok(Decision::Inject(after)) => {
            // The patch is the difference between the pod as read and as
            // it leaves: both through the same types, so the patch holds
            // the injection and nothing else.
            let read = serde_json::to_value(&pod);
            let injected = serde_json::to_value(&*after);
            let (Ok(read), Ok(injected)) = (read, injected) else {
                return refused(response, "Lockstep injector: the injected pod could not be written".into());
            };
            match response.clone().with_patch(json_patch::diff(&read, &injected)) {
                Ok(patched) => (patched, Outcome::Injected),
                Err(e) => refused(response, format!("Lockstep injector: the patch could not be written: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn defaults() -> Defaults {
        Defaults {
            image: "localhost/lockstep-sidecar:0.1.0".into(),
            vault_addr: String::new(),
            config_map: "lockstep-sidecar".into(),
            cache_key_secret: "lockstep-cache-key".into(),
        }
    }

    fn review_of(pod: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop", "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod, "dryRun": false
            }
        }))
        .expect("review")
    }

    fn answer(pod: Value) -> (Value, Outcome) {
        let (body, outcome) = review(&review_of(pod), &defaults()).expect("answered");
        (serde_json::from_slice(&body).expect("json"), outcome)
    }

    fn pod(annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "checkout-", "annotations": annotations,
               "labels": {"app": "checkout"}},
               "spec": {"containers": [{"name": "app", "image": "app:1", "env": [{"name": "DB_PASSWORD", "value": "hunter2"}]}],
                        "someFieldFromTheFuture": {"kept": true}}})
    }

    #[test]
    fn an_annotated_pod_gets_a_patch_that_applies_to_what_the_api_server_sent() {
        let original = pod(json!({"lockstep.dev/pool": "checkout"}));
        let (answer, outcome) = answer(original.clone());
        assert_eq!(outcome, Outcome::Injected);
        let response = &answer["response"];
        assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        let patch = base64_decode(response["patch"].as_str().unwrap_or_else(|| panic!("patch: {response}")));
        let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("a JSON patch");
        let mut patched = original.clone();
        json_patch::patch(&mut patched, &patch).expect("applies");
        assert_eq!(patched["spec"]["initContainers"][0]["name"], "lockstep");
        assert_eq!(patched["spec"]["initContainers"][0]["restartPolicy"], "Always");
        // What the injector does not know is left as it was.
        assert_eq!(patched["spec"]["someFieldFromTheFuture"], original["spec"]["someFieldFromTheFuture"]);
        assert_eq!(patched["metadata"]["labels"], original["metadata"]["labels"]);
        assert_eq!(patched["spec"]["containers"][0]["env"][0], original["spec"]["containers"][0]["env"][0]);
    }

    #[test]
    fn other_pods_are_admitted_without_a_patch_even_when_they_would_not_parse() {
        let mut odd = pod(json!({"other": "x"}));
        odd["spec"]["containers"] = json!("not a list");
        let (answer, outcome) = answer(odd);
        assert_eq!(outcome, Outcome::Untouched("no lockstep.dev/pool annotation"));
        assert_eq!(answer["response"]["allowed"], true);
        assert!(answer["response"].get("patch").is_none(), "{answer}");
    }

    #[test]
    fn a_malformed_ask_is_refused_with_a_message_and_no_secret() {
        let (answer, outcome) = answer(pod(json!({"lockstep.dev/pool": "checkout", "lockstep.dev/inject": "maybe"})));
        assert!(matches!(outcome, Outcome::Refused(_)), "{outcome:?}");
        assert_eq!(answer["response"]["allowed"], false);
        let message = answer["response"]["status"]["message"].as_str().expect("message");
        assert!(message.contains("lockstep.dev/inject"), "{message}");
        assert!(!answer.to_string().contains("hunter2"), "{answer}");
    }

    #[test]
    fn garbage_is_not_a_review() {
        assert!(review(b"{\"kind\": 1}", &defaults()).is_err());
        assert!(review(b"not json", &defaults()).is_err());
    }

    fn base64_decode(text: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(text).expect("base64")
    }
}
