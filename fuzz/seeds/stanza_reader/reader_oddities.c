
<?xml version="1.0" encoding="UTF-8"?>
<!-- hi -->
<?pi x?><s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:client' xmlns:d='google:mobile:data'><a b='x&#9;y&#xA;z' c="1
2" xml:lang='en'><!-- c --><?p i?>t&lt;&#x1F600;<![CDATA[]]]]><![CDATA[>]]>
u<d:gcm/><b><c><d/></c></b> </a><d:gcm d:k='v'>{}</d:gcm><q xmlns=''><r xmlns='urn:x'/></q></s:stream>
<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><iq/></stream:stream>