//! The `openai` agent backend: any OpenAI-compatible chat completions
//! endpoint (`POST {base_url}/chat/completions`), with the session's history
//! as context and tool calling routed to tool plugins through the
//! [`ToolBox`], which checks every call against the
//! permission mode.
//!
//! Requests that fail with 429, a 5xx or a network error (a stream that
//! breaks off included) are retried with exponential backoff and jitter
//! (honouring `Retry-After`), up to `[agent] max_retries` times; other
//! errors fail the turn with the server's message.
//!
//! With `[agent] stream = true` (the default) the reply is asked for as
//! server-sent events (`stream: true`, `stream_options: {include_usage:
//! true}`) and assembled from its deltas — text, and tool calls whose id,
//! name and argument pieces arrive spread over chunks, keyed by their
//! `index` ([`Assembly`]). A server that answers a streamed request with
//! plain JSON is understood too. The tokens each request used (`usage`) are
//! added to the session's count (`kata session show KEY`, `kata status`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::policy::agent::Settings;
use crate::session::{Entry, Role, Usage};
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
    stream: bool,
    tools: Arc<ToolBox>,
}

/// One answer of the model: its message (`{role, content, tool_calls}`, as
/// in a non-streamed response's `choices[0].message`) and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The assistant message.
    pub message: Value,
    /// Tokens used (zero when the server does not say).
    pub usage: Usage,
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
            stream: settings.stream,
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
            let completion = self.post(&body, input.draft.as_ref()).await?;
            out.usage += completion.usage;
            let message = &completion.message;
            let content = message["content"].as_str().unwrap_or_default().to_string();
            let calls = message["tool_calls"].as_array().cloned().unwrap_or_default();
            if calls.is_empty() {
                out.entries.push(Entry::assistant(&content));
                out.reply = (!content.is_empty()).then_some(content);
                out.attachments = input.call.attachments.take();
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
        out.attachments = input.call.attachments.take();
        Ok(out)
    }

    /// Summarise earlier history (for compaction); also returns the tokens it cost.
    pub async fn summarize(&self, previous: Option<&str>, entries: &[Entry]) -> Result<(String, Usage)> {
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
        let completion = self.post(&body, None).await?;
        let text = completion.message["content"].as_str().unwrap_or_default().trim().to_string();
        if text.is_empty() {
            anyhow::bail!("the agent backend returned an empty summary");
        }
        Ok((text, completion.usage))
    }

    /// POST a request (streamed, when so configured) and assemble the
    /// answer, retrying 429, 5xx and network errors with backoff. A streamed
    /// answer's text so far goes to `draft` as it grows.
    async fn post(&self, body: &Value, draft: Option<&tokio::sync::watch::Sender<String>>) -> Result<Completion> {
        let mut body = body.clone();
        if self.stream {
            body["stream"] = Value::Bool(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        let body = &body;
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
                    let is_sse = resp
                        .headers()
                        .get(reqwest::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with("text/event-stream"));
                    if status.is_success() && is_sse {
                        match self.read_stream(resp, draft).await {
                            Ok(c) => return Ok(c),
                            // A stream that broke off is retried like a network error.
                            Err(StreamError::Broken(e)) => (None, e),
                            Err(StreamError::Refused(e)) => return Err(e),
                        }
                    } else {
                        let text = resp.text().await.unwrap_or_default();
                        if status.is_success() {
                            let response: Value = serde_json::from_str(&text).with_context(|| {
                                format!("the agent backend at {} answered with something that is not JSON: {}", self.url, cut(&text))
                            })?;
                            let message = response["choices"][0]["message"].clone();
                            if message.is_null() {
                                anyhow::bail!("the agent backend's answer has no choices[0].message: {}", cut(&response.to_string()));
                            }
                            return Ok(Completion { message, usage: usage_of(&response) });
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
                                400 if self.stream => "; if this server cannot stream, set stream = false under [agent] in kata.toml",
                                _ => "",
                            };
                            return Err(e.context(format!("the request was refused{hint}")));
                        }
                        (retry_after, e)
                    }
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

/// Why reading a stream failed.
enum StreamError {
    /// It broke off (network, or it ended before its end): worth retrying.
    Broken(anyhow::Error),
    /// The server sent an error event: the turn fails.
    Refused(anyhow::Error),
}

impl OpenAi {
    /// Read a server-sent-events answer to its end (`data: [DONE]`, or the
    /// end of the body after a finish reason) and assemble it.
    async fn read_stream(
        &self,
        mut resp: reqwest::Response,
        draft: Option<&tokio::sync::watch::Sender<String>>,
    ) -> Result<Completion, StreamError> {
        let mut events = SseParser::default();
        let mut answer = Assembly::default();
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => return Err(StreamError::Broken(anyhow::anyhow!("the agent backend's stream from {} broke off: {e}", self.url))),
            };
            for data in events.push(&chunk) {
                if data == "[DONE]" {
                    return Ok(answer.finish());
                }
                let Ok(event) = serde_json::from_str::<Value>(&data) else {
                    tracing::debug!("ignoring a stream event that is not JSON: {}", cut(&data));
                    continue;
                };
                if let Some(m) = event["error"]["message"].as_str() {
                    return Err(StreamError::Refused(anyhow::anyhow!(
                        "the agent backend at {} sent an error in its stream: {m}",
                        self.url
                    )));
                }
                let before = answer.content.len();
                answer.apply(&event);
                if let Some(d) = draft
                    && answer.content.len() != before
                {
                    d.send_replace(answer.content.clone());
                }
            }
        }
        if answer.finish_reason.is_some() {
            return Ok(answer.finish());
        }
        Err(StreamError::Broken(anyhow::anyhow!("the agent backend's stream from {} ended before the answer did", self.url)))
    }
}

/// Splits a server-sent-events byte stream into the `data` of each event
/// (several `data:` lines of one event are joined with `\n`).
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// Feed bytes; returns the data of every event they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = self.buf.drain(..=i).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                out.extend(self.data.take());
            } else if let Some(v) = line.strip_prefix("data:") {
                let v = v.strip_prefix(' ').unwrap_or(v);
                match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(v);
                    }
                    None => self.data = Some(v.to_string()),
                }
            }
            // `event:`, `id:`, `retry:` and `:` comments carry nothing kata reads.
        }
        out
    }
}

/// A streamed answer being put together from its chunks.
#[derive(Debug, Default)]
pub struct Assembly {
    content: String,
    /// Tool calls by their `index`: id, name, arguments so far.
    calls: std::collections::BTreeMap<u64, (String, String, String)>,
    usage: Usage,
    finish_reason: Option<String>,
}

impl Assembly {
    /// Add one chunk (`{"choices": [{"delta": …, "finish_reason": …}], "usage": …}`).
    pub fn apply(&mut self, chunk: &Value) {
        if chunk["usage"].is_object() {
            self.usage = usage_of(chunk);
        }
        let Some(choice) = chunk["choices"].as_array().and_then(|c| c.iter().find(|c| c["index"].as_u64().unwrap_or(0) == 0)) else {
            return;
        };
        let delta = &choice["delta"];
        if let Some(t) = delta["content"].as_str() {
            self.content.push_str(t);
        }
        for (position, call) in delta["tool_calls"].as_array().into_iter().flatten().enumerate() {
            let index = call["index"].as_u64().unwrap_or(position as u64);
            let (id, name, args) = self.calls.entry(index).or_default();
            if let Some(i) = call["id"].as_str().filter(|i| !i.is_empty()) {
                *id = i.to_string();
            }
            // The name comes whole in the first chunk; some servers repeat it.
            if let Some(n) = call["function"]["name"].as_str().filter(|n| !n.is_empty() && *n != name.as_str()) {
                name.push_str(n);
            }
            if let Some(a) = call["function"]["arguments"].as_str() {
                args.push_str(a);
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.finish_reason = Some(f.to_string());
        }
    }

    /// The assembled answer.
    pub fn finish(self) -> Completion {
        let mut message = json!({"role": "assistant", "content": self.content});
        if !self.calls.is_empty() {
            let calls: Vec<Value> = self
                .calls
                .into_iter()
                .map(|(i, (id, name, args))| {
                    let id = if id.is_empty() { format!("call_{i}") } else { id };
                    let args = if args.trim().is_empty() { "{}".to_string() } else { args };
                    json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})
                })
                .collect();
            message["tool_calls"] = Value::Array(calls);
        }
        Completion { message, usage: self.usage }
    }
}

/// The `usage` of a response or final chunk.
fn usage_of(v: &Value) -> Usage {
    Usage {
        prompt_tokens: v["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
        completion_tokens: v["usage"]["completion_tokens"].as_u64().unwrap_or(0),
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

    #[test]
    fn server_sent_events_split_at_blank_lines_across_chunk_boundaries() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: {\"a\"").is_empty());
        assert_eq!(p.push(b":1}\r\n\r\n: comment\n\nevent: x\ndata: one\ndata: two\n\ndata: [DONE]\n"), vec!["{\"a\":1}", "one\ntwo"]);
        assert_eq!(p.push(b"\n"), vec!["[DONE]"]);
    }

    #[test]
    fn tool_call_deltas_are_assembled_by_index() {
        let chunks = [
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": null}}]}),
            json!({"choices": [{"index": 0, "delta": {"content": "Let me "}}]}),
            json!({"choices": [{"index": 0, "delta": {"content": "look.", "tool_calls": [
                {"index": 0, "id": "c1", "type": "function", "function": {"name": "notes__search", "arguments": ""}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 1, "id": "c2", "type": "function", "function": {"name": "web-fetch__fetch", "arguments": "{\"url\""}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"query\":"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "function": {"arguments": ":\"http://x\"}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "\"kata\"}"}}]}}]}),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}),
        ];
        let mut a = Assembly::default();
        for c in &chunks {
            a.apply(c);
        }
        let c = a.finish();
        assert_eq!(c.usage, Usage { prompt_tokens: 12, completion_tokens: 5 });
        assert_eq!(c.message["content"], "Let me look.");
        let calls = c.message["tool_calls"].as_array().expect("calls");
        assert_eq!(calls.len(), 2);
        assert_eq!((calls[0]["id"].as_str(), calls[0]["function"]["name"].as_str()), (Some("c1"), Some("notes__search")));
        assert_eq!(calls[0]["function"]["arguments"], "{\"query\":\"kata\"}");
        assert_eq!(calls[1]["function"]["arguments"], "{\"url\":\"http://x\"}");
        assert_eq!(calls[1]["type"], "function");
    }
}
