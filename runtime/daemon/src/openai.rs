//! The `openai` agent backend: any OpenAI-compatible chat completions
//! endpoint (`POST {base_url}/chat/completions`), with the session's history
//! as context and tool calling routed to tool plugins through the
//! [`ToolBox`], which checks every call against the
//! permission mode.
//!
//! Requests that fail with 429, a 5xx or a network error are retried with
//! exponential backoff and jitter (honouring `Retry-After`), up to
//! `[agent] max_retries` times; other errors fail the turn with the server's
//! message.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::policy::agent::Settings;
use crate::session::{Entry, Role};
use crate::tools::ToolBox;
use crate::turn::{TurnInput, TurnOutput};

/// First retry delay; doubles per attempt, capped at [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// An OpenAI-compatible backend.
pub struct OpenAi {
    client: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
    system_prompt: Option<String>,
    max_retries: u32,
    max_tool_rounds: u32,
    tools: Arc<ToolBox>,
}

impl OpenAi {
    /// A backend for these settings. Reads the API key now, so a missing one
    /// stops the start with a clear message.
    pub fn new(settings: &Settings, workspace: &Path, tools: Arc<ToolBox>) -> Result<Self> {
        let api_key = match &settings.api_key {
            None => None,
            Some(src) => Some(
                crate::secret_store::resolve(src, workspace)
                    .map_err(|e| anyhow::anyhow!("[agent] api_key: {e}; set it, or change `api_key` under [agent] in kata.toml"))?,
            ),
        };
        let client = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .build()
            .context("cannot build the HTTP client for the agent backend")?;
        Ok(Self {
            client,
            url: format!("{}/chat/completions", settings.base_url),
            model: settings.model.clone(),
            api_key,
            system_prompt: settings.system_prompt.clone(),
            max_retries: settings.max_retries,
            max_tool_rounds: settings.max_tool_rounds,
            tools,
        })
    }

    /// One turn: ask the model, run the tools it calls (each checked by the
    /// toolbox), give it the results, until it answers.
    pub async fn turn(&self, input: TurnInput) -> Result<TurnOutput> {
        let entries = self.tools.entries().await;
        let tools: Vec<Value> = entries
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.function, "description": t.description, "parameters": t.schema}})
            })
            .collect();
        let mut messages = Vec::new();
        if let Some(p) = &self.system_prompt {
            messages.push(json!({"role": "system", "content": p}));
        }
        if let Some(s) = &input.summary {
            messages.push(json!({"role": "system", "content": format!("Summary of the earlier conversation: {s}")}));
        }
        messages.extend(input.history.iter().map(to_message));
        messages.push(to_message(&Entry::user(&input.text)));
        let mut out = TurnOutput::default();
        for _ in 0..self.max_tool_rounds {
            let mut body = json!({"model": self.model, "messages": messages});
            if !tools.is_empty() {
                body["tools"] = Value::Array(tools.clone());
            }
            let response = self.post(&body).await?;
            let message = &response["choices"][0]["message"];
            if message.is_null() {
                anyhow::bail!("the agent backend's answer has no choices[0].message: {}", cut(&response.to_string()));
            }
            let content = message["content"].as_str().unwrap_or_default().to_string();
            let calls = message["tool_calls"].as_array().cloned().unwrap_or_default();
            if calls.is_empty() {
                out.entries.push(Entry::assistant(&content));
                out.reply = (!content.is_empty()).then_some(content);
                return Ok(out);
            }
            let request =
                Entry { role: Role::Assistant, content, tool_calls: Some(Value::Array(calls.clone()).to_string()), tool_call_id: None };
            messages.push(to_message(&request));
            out.entries.push(request);
            for call in &calls {
                let id = call["id"].as_str().unwrap_or_default().to_string();
                let function = call["function"]["name"].as_str().unwrap_or_default();
                let args = call["function"]["arguments"].as_str().unwrap_or("{}");
                let result = self.tools.call(&input.call, function, args).await;
                let entry = Entry { role: Role::Tool, content: result, tool_calls: None, tool_call_id: Some(id) };
                messages.push(to_message(&entry));
                out.entries.push(entry);
            }
        }
        let text = format!("I stopped after {} rounds of tool calls without reaching an answer.", self.max_tool_rounds);
        out.entries.push(Entry::assistant(&text));
        out.reply = Some(text);
        Ok(out)
    }

    /// Summarise earlier history (for compaction).
    pub async fn summarize(&self, previous: Option<&str>, entries: &[Entry]) -> Result<String> {
        let mut transcript = String::new();
        if let Some(p) = previous {
            transcript.push_str(&format!("(earlier summary) {p}\n"));
        }
        for e in entries {
            match (e.role, &e.tool_calls) {
                (Role::Assistant, Some(calls)) => transcript.push_str(&format!("assistant called tools: {calls}\n")),
                (role, _) => transcript.push_str(&format!("{}: {}\n", role.as_str(), e.content)),
            }
        }
        let body = json!({"model": self.model, "messages": [
            {"role": "system", "content": "Summarise this conversation in a few sentences for your own later reference: \
                keep names, facts, decisions, and open questions. Answer with the summary only."},
            {"role": "user", "content": transcript},
        ]});
        let response = self.post(&body).await?;
        let text = response["choices"][0]["message"]["content"].as_str().unwrap_or_default().trim().to_string();
        if text.is_empty() {
            anyhow::bail!("the agent backend returned an empty summary");
        }
        Ok(text)
    }

    /// POST a request, retrying 429, 5xx and network errors with backoff.
    async fn post(&self, body: &Value) -> Result<Value> {
        let mut attempt = 0u32;
        loop {
            let mut req = self.client.post(&self.url).json(body);
            if let Some(k) = &self.api_key {
                req = req.bearer_auth(k);
            }
            let (retry_after, error) = match req.send().await {
                Err(e) => (None, anyhow::anyhow!("cannot reach the agent backend at {}: {e}", self.url)),
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let text = resp.text().await.unwrap_or_default();
                    if status.is_success() {
                        return serde_json::from_str(&text).with_context(|| {
                            format!("the agent backend at {} answered with something that is not JSON: {}", self.url, cut(&text))
                        });
                    }
                    let message = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                        .unwrap_or_else(|| cut(&text));
                    let e = anyhow::anyhow!("the agent backend at {} answered {status}: {message}", self.url);
                    if !(status.as_u16() == 429 || status.is_server_error()) {
                        let hint = match status.as_u16() {
                            401 | 403 => "; check [agent] api_key in kata.toml",
                            404 => "; check [agent] base_url and model in kata.toml",
                            _ => "",
                        };
                        return Err(e.context(format!("the request was refused{hint}")));
                    }
                    (retry_after, e)
                }
            };
            if attempt >= self.max_retries {
                return Err(error.context(format!("gave up after {} attempts", attempt + 1)));
            }
            let backoff = BACKOFF.saturating_mul(1 << attempt.min(16)).min(MAX_BACKOFF);
            let delay = retry_after.unwrap_or(backoff + jitter(backoff / 2)).min(MAX_BACKOFF);
            tracing::warn!(attempt = attempt + 1, "{error:#}; retrying in {delay:?}");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// A history entry as a chat API message.
fn to_message(e: &Entry) -> Value {
    let mut m = json!({"role": e.role.as_str(), "content": e.content});
    if let Some(calls) = &e.tool_calls {
        m["tool_calls"] = serde_json::from_str(calls).unwrap_or(Value::Array(vec![]));
    }
    if let Some(id) = &e.tool_call_id {
        m["tool_call_id"] = Value::String(id.clone());
    }
    m
}

/// A random duration below `max` (from the clock's nanoseconds: good enough
/// to spread retries, no RNG dependency).
fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let max_ms = max.as_millis().max(1) as u64;
    Duration::from_millis(u64::from(nanos) % max_ms)
}

fn cut(s: &str) -> String {
    let mut s: String = s.chars().take(300).collect();
    s = s.replace('\n', " ");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_chat_messages() {
        let call = Entry {
            role: Role::Assistant,
            content: String::new(),
            tool_calls: Some(r#"[{"id":"c1","type":"function","function":{"name":"n__t","arguments":"{}"}}]"#.into()),
            tool_call_id: None,
        };
        let m = to_message(&call);
        assert_eq!(m["tool_calls"][0]["id"], "c1");
        let result = Entry { role: Role::Tool, content: "ok".into(), tool_calls: None, tool_call_id: Some("c1".into()) };
        assert_eq!(to_message(&result), json!({"role": "tool", "content": "ok", "tool_call_id": "c1"}));
        assert!(jitter(Duration::from_millis(10)) < Duration::from_millis(10));
    }
}
