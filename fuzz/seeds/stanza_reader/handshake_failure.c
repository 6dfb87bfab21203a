<?xml version='1.0'?>
<stream:stream from="gcm.googleapis.com" id="3F2A9C0D11B7E845" version="1.0" xmlns:stream="http://etherx.jabber.org/streams" xmlns="jabber:client"><stream:features><mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl">
  <mechanism>X-OAUTH2</mechanism><mechanism>X-GOOGLE-TOKEN</mechanism>
  <mechanism>PLAIN</mechanism></mechanisms></stream:features><failure xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><not-authorized/></failure></stream:stream>