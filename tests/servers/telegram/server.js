// telegram-test-api emulator on 127.0.0.1:$PORT. The Bot API is at
// http://127.0.0.1:PORT/bot<TOKEN>/<method>; the client side (a user talking to
// the bot) is POST /sendMessage, POST /sendCallback (a button press) and POST
// /getUpdates. Started by kata's tests and demo as a child process; it exits
// on SIGTERM/SIGINT or when stdin closes.
//
// telegram-test-api 4.2.1 lacks sendChatAction, setMessageReaction and
// sendDocument, accepts any text, edit or callback answer, and hands each update out
// once whatever the offset. The routes below add and replace them as the
// real Bot API behaves (same validation, same response shapes,
// `{ok:false, error_code:400, description:"Bad Request: …"}` for a chat or
// message that does not exist or a reaction Telegram does not allow), and
// record every call so tests can read them back with the client route
// POST /getBotActions {"token": TOKEN} →
// {ok:true, result:{chatActions, reactions, documents, edits, callbackAnswers}}.
// POST /failBotMethod makes a later call of a method fail (e.g. with 429).
// A sent document is also a bot message (with `document` and `caption`), so
// the client's POST /getUpdates lists it like a sent text.
// They are put in front of the library's own routes (its catch-all answers
// "API method … is not supported"); node_modules stays untouched.
const TelegramServer = require('telegram-test-api');
const { routes } = require('telegram-test-api/lib/routes/index');

// The emoji Telegram lets bots react with (ReactionTypeEmoji).
const REACTION_EMOJI = new Set([
  '👍', '👎', '❤', '🔥', '🥰', '👏', '😁', '🤔', '🤯', '😱', '🤬', '😢', '🎉', '🤩', '🤮', '💩', '🙏', '👌', '🕊', '🤡', '🥱', '🥴', '😍', '🐳',
  '❤\u200d🔥', '🌚', '🌭', '💯', '🤣', '⚡', '🍌', '🏆', '💔', '🤨', '😐', '🍓', '🍾', '💋', '🖕', '😈', '😴', '😭', '🤓', '👻',
  '👨\u200d💻', '👀', '🎃', '🙈', '😇', '😨', '🤝', '✍', '🤗', '🫡', '🎅', '🎄', '☃', '💅', '🤪', '🗿', '🆒', '💘', '🙉', '🦄', '😘',
  '💊', '🙊', '😎', '👾', '🤷\u200d♂', '🤷', '🤷\u200d♀', '😡',
]);
const CHAT_ACTIONS = new Set([
  'typing', 'upload_photo', 'record_video', 'upload_video', 'record_voice', 'upload_voice', 'upload_document',
  'choose_sticker', 'find_location', 'record_video_note', 'upload_video_note',
]);
const MAX_CAPTION = 1024;
const MAX_TEXT = 4096;
const NOT_MODIFIED = 'message is not modified: specified new message content and reply markup are exactly the same'
  + ' as a current content and reply markup of the message';

// What each bot did, by token.
const recorded = new Map();
function record(token) {
  if (!recorded.has(token)) {
    recorded.set(token, { chatActions: [], reactions: [], documents: [], edits: [], callbackAnswers: [] });
  }
  return recorded.get(token);
}

function badRequest(res, description) {
  res.status(400).json({ ok: false, error_code: 400, description: `Bad Request: ${description}` });
}

// Telegram counts text length in UTF-16 code units, as JavaScript does.
const tooLong = (text, max) => typeof text === 'string' && text.length > max;

// Parameters from the query string and a JSON, urlencoded or multipart body;
// values sent as form text are strings, so JSON-valued ones are parsed.
function params(req) {
  const p = { ...req.query, ...(req.body && typeof req.body === 'object' && !Buffer.isBuffer(req.body) ? req.body : {}) };
  for (const key of ['reply_markup', 'reaction']) {
    if (typeof p[key] === 'string') {
      try { p[key] = JSON.parse(p[key]); } catch (_) { /* left as text: refused below */ }
    }
  }
  return p;
}

// A minimal multipart/form-data parser: fields as strings, files as
// {filename, contentType, data}. Enough for the Bot API's uploads.
function parseMultipart(buffer, contentType) {
  const m = /boundary=(?:"([^"]+)"|([^;]+))/i.exec(contentType || '');
  if (!m) return null;
  const delimiter = Buffer.from(`--${m[1] || m[2]}`);
  const fields = {};
  const files = {};
  let pos = buffer.indexOf(delimiter);
  while (pos !== -1) {
    let start = pos + delimiter.length;
    if (buffer.slice(start, start + 2).toString() === '--') break;
    start += 2; // CRLF after the delimiter
    const headEnd = buffer.indexOf('\r\n\r\n', start);
    if (headEnd === -1) break;
    const head = buffer.slice(start, headEnd).toString('utf8');
    const next = buffer.indexOf(Buffer.concat([Buffer.from('\r\n'), delimiter]), headEnd + 4);
    if (next === -1) break;
    const data = buffer.slice(headEnd + 4, next);
    const name = /name="([^"]*)"/i.exec(head);
    const filename = /filename="([^"]*)"/i.exec(head);
    const type = /content-type:\s*([^\r\n]+)/i.exec(head);
    if (name) {
      if (filename) {
        files[name[1]] = { filename: filename[1], contentType: type ? type[1].trim() : 'application/octet-stream', data };
      } else {
        fields[name[1]] = data.toString('utf8');
      }
    }
    pos = next + 2;
  }
  return { fields, files };
}

// Read a multipart body into req.body (fields) and req.files.
function multipart(req, res, next) {
  const type = req.headers['content-type'] || '';
  if (!/^multipart\/form-data/i.test(type)) {
    next();
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('error', next);
  req.on('end', () => {
    const parsed = parseMultipart(Buffer.concat(chunks), type);
    if (!parsed) {
      badRequest(res, 'invalid multipart/form-data request');
      return;
    }
    req.body = parsed.fields;
    req.files = parsed.files;
    next();
  });
}

function botUpdates(server, token) {
  return server.storage.botMessages.filter((u) => u.botToken === token);
}

function userUpdates(server, token) {
  return server.storage.userMessages.filter((u) => u.botToken === token);
}

function userChatId(update) {
  if (update.callbackQuery) return update.callbackQuery.message && update.callbackQuery.message.chat && update.callbackQuery.message.chat.id;
  return update.message && update.message.chat && update.message.chat.id;
}

// A chat the bot can see: one a user wrote or pressed a button in, or the bot wrote to.
function chatKnown(server, token, chatId) {
  if (chatId === undefined || chatId === null || chatId === '') return false;
  const id = String(chatId);
  return userUpdates(server, token).some((u) => String(userChatId(u)) === id)
    || botUpdates(server, token).some((u) => String(u.message.chat_id) === id);
}

// A message in that chat (the user's or the bot's), as its stored update.
function findMessage(server, token, chatId, messageId) {
  const chat = String(chatId);
  const id = String(messageId);
  const user = userUpdates(server, token).find((u) => u.message && String(u.messageId) === id && String(userChatId(u)) === chat);
  if (user) return { update: user, fromBot: false };
  const bot = botUpdates(server, token).find((u) => String(u.messageId) === id && String(u.message.chat_id) === chat);
  return bot ? { update: bot, fromBot: true } : null;
}

// The Message a bot method answers with, for a stored bot message.
function asMessage(update) {
  const m = update.message;
  return {
    ...m,
    message_id: update.messageId,
    date: update.time,
    chat: { id: Number(m.chat_id), first_name: 'Bot', type: 'private' },
  };
}

function handle(app, method, handler) {
  app.all(`/bot:token/${method}`, multipart, (req, res) => {
    if (req.method !== 'GET' && req.method !== 'POST') {
      res.status(405).json({ ok: false, error_code: 405, description: 'Method Not Allowed' });
      return;
    }
    handler(req, res, req.params.token, params(req));
  });
}

// The update kinds each bot last asked getUpdates for (Telegram remembers
// them), and the offset up to which it confirmed its updates.
const confirmedKinds = new Map();
const confirmed = new Map();

// Failures a test asked for: `${token} ${method}` → {skip, error_code, retry_after}.
const failures = new Map();

function kataRoutes(app, server) {
  // POST /failBotMethod {token, method, skip, error_code, retry_after}: after
  // `skip` more successful calls of `method`, one call fails the way the Bot
  // API fails it (429 "Too Many Requests: retry after N" with
  // parameters.retry_after, or another error_code).
  app.post('/failBotMethod', (req, res) => {
    const { token, method } = req.body;
    failures.set(`${token} ${method}`, {
      skip: Number(req.body.skip || 0),
      error_code: Number(req.body.error_code || 429),
      retry_after: Number(req.body.retry_after || 1),
    });
    res.json({ ok: true, result: true });
  });
  app.all('/bot:token/:method', (req, res, next) => {
    const key = `${req.params.token} ${req.params.method}`;
    const failure = failures.get(key);
    if (!failure) return next();
    if (failure.skip > 0) {
      failure.skip -= 1;
      return next();
    }
    failures.delete(key);
    if (failure.error_code === 429) {
      return res.status(429).json({
        ok: false,
        error_code: 429,
        description: `Too Many Requests: retry after ${failure.retry_after}`,
        parameters: { retry_after: failure.retry_after },
      });
    }
    return res.status(failure.error_code).json({ ok: false, error_code: failure.error_code, description: 'Failed as the test asked' });
  });

  // getUpdates as the real Bot API keeps it (the library hands each update
  // out once, so an update a client fetched but did not store before a crash
  // was lost): every update from `offset` on is returned, again and again,
  // until a call's `offset` confirms it (offset = last update_id + 1);
  // `allowed_updates` filters by kind, `limit` caps the batch (default 100),
  // and `timeout` waits up to that many seconds (at most 50) for an update.
  handle(app, 'getUpdates', (req, res, token, p) => {
    const offset = p.offset === undefined || p.offset === '' ? null : Number(p.offset);
    const limit = Math.min(Math.max(Number(p.limit || 100), 1), 100);
    let allowed = p.allowed_updates;
    if (typeof allowed === 'string') {
      try { allowed = JSON.parse(allowed); } catch (_) { return badRequest(res, "can't parse allowed updates JSON object"); }
    }
    if (Array.isArray(allowed)) confirmedKinds.set(token, allowed);
    const kinds = confirmedKinds.get(token);
    // Confirm everything before the offset (kept in storage: reactions and
    // callback answers still find it).
    if (offset !== null) confirmed.set(token, Math.max(confirmed.get(token) || 0, offset));
    const pending = () => {
      const from = confirmed.get(token) || 0;
      return server.storage.userMessages
        .filter((u) => u.botToken === token && u.updateId >= from)
        .map((u) => TelegramServer.formatUpdate(u))
        .filter((u) => !kinds || kinds.length === 0 || kinds.some((k) => k in u))
        .sort((a, b) => a.update_id - b.update_id)
        .slice(0, limit);
    };
    const now = pending();
    const timeout = Math.min(Number(p.timeout || 0), 50);
    if (now.length > 0 || !(timeout > 0)) return res.json({ ok: true, result: now });
    const events = ['AddedUserMessage', 'AddedUserCommand', 'AddedUserCallbackQuery'];
    let timer = null;
    const done = () => {
      events.forEach((e) => server.off(e, done));
      clearTimeout(timer);
      if (!res.headersSent) res.json({ ok: true, result: pending() });
    };
    events.forEach((e) => server.on(e, done));
    timer = setTimeout(done, timeout * 1000);
    res.on('close', () => {
      events.forEach((e) => server.off(e, done));
      clearTimeout(timer);
    });
    return undefined;
  });

  // sendMessage with the real API's checks on the text (the library takes
  // anything), otherwise as the library stores it.
  handle(app, 'sendMessage', (req, res, token, p) => {
    if (typeof p.text !== 'string' || p.text.trim() === '') return badRequest(res, 'message text is empty');
    if (tooLong(p.text, MAX_TEXT)) return badRequest(res, 'message is too long');
    return res.json({ ok: true, result: server.addBotMessage(req.body, token) });
  });

  handle(app, 'sendChatAction', (req, res, token, p) => {
    if (!CHAT_ACTIONS.has(p.action)) return badRequest(res, 'wrong parameter action in request');
    if (!chatKnown(server, token, p.chat_id)) return badRequest(res, 'chat not found');
    record(token).chatActions.push({ chat_id: Number(p.chat_id), action: p.action, message_thread_id: p.message_thread_id, time: Date.now() });
    return res.json({ ok: true, result: true });
  });

  handle(app, 'setMessageReaction', (req, res, token, p) => {
    if (!chatKnown(server, token, p.chat_id)) return badRequest(res, 'chat not found');
    const reaction = p.reaction === undefined ? [] : p.reaction;
    if (!Array.isArray(reaction)) return badRequest(res, "can't parse reaction types JSON object");
    if (reaction.length > 1) return badRequest(res, 'REACTIONS_TOO_MANY');
    if (reaction.some((r) => !r || r.type !== 'emoji' || !REACTION_EMOJI.has(r.emoji))) return badRequest(res, 'REACTION_INVALID');
    if (!findMessage(server, token, p.chat_id, p.message_id)) return badRequest(res, 'message to react not found');
    record(token).reactions.push({ chat_id: Number(p.chat_id), message_id: Number(p.message_id), reaction, time: Date.now() });
    return res.json({ ok: true, result: true });
  });

  handle(app, 'sendDocument', (req, res, token, p) => {
    const file = req.files && req.files.document;
    const document = file
      ? { file_name: file.filename, mime_type: file.contentType, file_size: file.data.length }
      : (typeof p.document === 'string' && p.document !== '' ? { file_id: p.document } : null);
    if (!document) return badRequest(res, 'there is no document in the request');
    if (tooLong(p.caption, MAX_CAPTION)) return badRequest(res, 'message caption is too long');
    if (!chatKnown(server, token, p.chat_id)) return badRequest(res, 'chat not found');
    document.file_id = document.file_id || `doc-${token.length}-${Date.now()}-${Math.random().toString(36).slice(2)}`;
    document.file_unique_id = document.file_id;
    // Form fields arrive as text; ids are numbers in the Bot API.
    const num = (v) => (typeof v === 'string' && /^-?\d+$/.test(v) ? Number(v) : v);
    const fields = { chat_id: num(p.chat_id), document };
    for (const key of ['caption', 'reply_markup', 'reply_to_message_id', 'message_thread_id']) {
      if (p[key] !== undefined) fields[key] = num(p[key]);
    }
    const message = server.addBotMessage(fields, token);
    delete message.text;
    record(token).documents.push({
      chat_id: Number(p.chat_id),
      message_id: message.message_id,
      caption: p.caption,
      reply_markup: p.reply_markup,
      reply_to_message_id: p.reply_to_message_id === undefined ? undefined : Number(p.reply_to_message_id),
      message_thread_id: p.message_thread_id === undefined ? undefined : Number(p.message_thread_id),
      file_name: document.file_name,
      mime_type: document.mime_type,
      data_base64: file ? file.data.toString('base64') : undefined,
      time: Date.now(),
    });
    return res.json({ ok: true, result: message });
  });

  // Edits as the real API answers them: only the bot's own messages, a
  // caption only where there is one, "not modified" for the same content.
  const edit = (field) => (req, res, token, p) => {
    if (p.inline_message_id !== undefined) return badRequest(res, 'inline messages are not supported by this emulator');
    if (!chatKnown(server, token, p.chat_id)) return badRequest(res, 'chat not found');
    const found = findMessage(server, token, p.chat_id, p.message_id);
    if (!found || !found.fromBot) return badRequest(res, 'message to edit not found');
    const stored = found.update.message;
    const value = p[field];
    if (field === 'text') {
      if (typeof value !== 'string' || value.trim() === '') return badRequest(res, 'message text is empty');
      if (tooLong(value, MAX_TEXT)) return badRequest(res, 'MESSAGE_TOO_LONG');
      if (stored.text === undefined) return badRequest(res, 'there is no text in the message to edit');
    } else {
      if (tooLong(value, MAX_CAPTION)) return badRequest(res, 'message caption is too long');
      if (!stored.document) return badRequest(res, 'there is no caption in the message to edit');
    }
    // An edit without reply_markup removes the inline keyboard, as in Telegram.
    const sameMarkup = JSON.stringify(p.reply_markup) === JSON.stringify(stored.reply_markup);
    if ((stored[field] || '') === (value || '') && sameMarkup) return badRequest(res, NOT_MODIFIED);
    stored[field] = value;
    stored.reply_markup = p.reply_markup;
    stored.edit_date = Date.now();
    // Unread again, so the client's getUpdates shows the new version.
    found.update.isRead = false;
    record(token).edits.push({ chat_id: Number(p.chat_id), message_id: Number(p.message_id), [field]: value, time: Date.now() });
    return res.json({ ok: true, result: asMessage(found.update) });
  };
  handle(app, 'editMessageText', edit('text'));
  handle(app, 'editMessageCaption', edit('caption'));

  handle(app, 'answerCallbackQuery', (req, res, token, p) => {
    const known = userUpdates(server, token).some((u) => u.callbackQuery && String(u.callbackId) === String(p.callback_query_id));
    if (!known) return badRequest(res, 'query is too old and response timeout expired or query ID is invalid');
    record(token).callbackAnswers.push({ callback_query_id: String(p.callback_query_id), text: p.text, time: Date.now() });
    return res.json({ ok: true, result: true });
  });

  app.post('/getBotActions', (req, res) => {
    res.json({ ok: true, result: record(req.body.token) });
  });
}

routes.unshift(kataRoutes);

const port = parseInt(process.env.PORT || '19000', 10);
const server = new TelegramServer({ port, host: '127.0.0.1', storage: 'RAM', storeTimeout: 600 });
server.start().then(() => console.log(`telegram-test-api listening ${server.config.apiURL}`));
const stop = () => server.stop().then(() => process.exit(0), () => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// If the parent dies without killing us, don't linger as an orphan.
process.stdin.on('end', stop);
process.stdin.resume();
