ÿ<stream:stream to="gcm.googleapis.com" version="1.0" xmlns="jabber:client"
     xmlns:stream="http://etherx.jabber.org/streams">
<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">ADEyMzQ1Njc4OTAxMkBnY20uZ29vZ2xlYXBpcy5jb20AU0VSVkVSX0tFWQ==</auth>
<iq type="set" id="bind1"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind">
     <resource>fcmxmpp</resource></bind></iq>
<iq type="set" id="sess1"><session xmlns="urn:ietf:params:xml:ns:xmpp-session"/></iq>
<iq to="gcm.googleapis.com" id="p7" type="get"><ping
  xmlns="urn:xmpp:ping"/></iq>