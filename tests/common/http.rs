//! A small HTTP client for the tests of the service's listener: redirects not followed,
//! every status returned as it is.

use std::time::Duration;

use serde_json::Value;

pub struct Reply {
    pub status: u16,
    pub location: Option<String>,
    pub www_authenticate: Option<String>,
    pub text: String,
}

impl Reply {
    /// The body as JSON (panics, showing it, if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

/// GET `url`, with the bearer token when given.
pub fn get(url: &str, token: Option<&str>) -> Reply {
    let config = ureq::Agent::config_builder()
        .max_redirects(0)
        .max_redirects_will_error(false)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build();
    let mut request = ureq::Agent::new_with_config(config).get(url);
    if let Some(t) = token {
        request = request.header("Authorization", &format!("Bearer {t}"));
    }
    let mut response = request.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let location = header("location");
    let www_authenticate = header("www-authenticate");
    Reply {
        status: response.status().as_u16(),
        location,
        www_authenticate,
        text: response.body_mut().read_to_string().unwrap_or_default(),
    }
}
