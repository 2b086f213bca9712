// telegram-test-api emulator on 127.0.0.1:$PORT. The Bot API is at
// http://127.0.0.1:PORT/bot<TOKEN>/<method>; the client side (a user talking to
// the bot) is POST /sendMessage and POST /getUpdates. Started by kata's tests
// and demo as a child process; it exits on SIGTERM/SIGINT or when stdin closes.
const TelegramServer = require('telegram-test-api');
const port = parseInt(process.env.PORT || '19000', 10);
const server = new TelegramServer({ port, host: '127.0.0.1', storage: 'RAM', storeTimeout: 600 });
server.start().then(() => console.log(`telegram-test-api listening ${server.config.apiURL}`));
const stop = () => server.stop().then(() => process.exit(0), () => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// If the parent dies without killing us, don't linger as an orphan.
process.stdin.on('end', stop);
process.stdin.resume();
