ÿ<stream:stream from="gcm.googleapis.com" id="3F2A9C0D11B7E845" version="1.0" xmlns:stream="http://etherx.jabber.org/streams" xmlns="jabber:client">
<stream:features><mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl">
     <mechanism>X-OAUTH2</mechanism><mechanism>X-GOOGLE-TOKEN</mechanism>
     <mechanism>PLAIN</mechanism></mechanisms></stream:features>
<success xmlns="urn:ietf:params:xml:ns:xmpp-sasl"/>
<stream:stream from="gcm.googleapis.com" id="9B1E4C7A22D3F560" version="1.0"
     xmlns:stream="http://etherx.jabber.org/streams" xmlns="jabber:client">
<stream:features><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/>
     <session xmlns="urn:ietf:params:xml:ns:xmpp-session"/></stream:features>
<iq type="result" id="bind1"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind">
     <jid>123456789012@gcm.googleapis.com/fcmxmpp5D0C9A1E</jid></bind></iq>
<iq type="result" id="sess1"/>
