ÿ<stream:stream to="gcm.googleapis.com" version="1.0" xmlns="jabber:client"
     xmlns:stream="http://etherx.jabber.org/streams"><message id="m-42"><gcm xmlns="google:mobile:data">{"to":"TOKEN","message_id":"m-42",
"time_to_live":600,"data":{"k":"a &amp; b &lt; c"}}</gcm></message><message id="a-9"><gcm xmlns="google:mobile:data">{"to":"DEVICE_TOKEN","message_id":"m-123",
"message_type":"ack"}</gcm></message> 