"""De-identification: protected health information -> typed placeholders.

Detectors, each a small rule with a reason to exist:

* ID_NUMBER — 18 characters, a valid birth date and a valid GB 11643 check digit; a
  number that fails the checksum is *not* an ID (a specimen barcode, say) and stays.
* PHONE — mobiles (1[3-9] + 9 digits, spaces or hyphens allowed) and landlines with an
  area code (0571-8723 6610, (021)64385120, 021-64175590-8032 with an extension);
  never inside a longer digit run.
* RECORD_NO — the number after a record label (住院号, 病案号, 门诊号, 就诊卡号 ...).
* BIRTH_DATE / DATE — full dates (年月日, -, /, .); a birth date when a birth cue
  (出生, 生于, 生日 ...) comes right before it.
* ADDRESS — a cue (住址, 家住, 现住 ...) or an administrative prefix (省/市/区/县 ...)
  followed by a street part (路, 街, 巷, 村 ... + 号/栋/室).
* NAME — cue words before a name (患者, 姓名, 家属, 之子 ...), "name，男/女" and
  "name + kinship" patterns, jieba's person-name tags, compound surnames, minority
  names with "·"; every occurrence of a name found once is masked everywhere in the text.

Placeholders: [姓名] [身份证号] [电话] [地址] [住院号] [出生日期] [日期].
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from medlab.zh import id_number_valid

PLACEHOLDERS = {"NAME": "[姓名]", "ID_NUMBER": "[身份证号]", "PHONE": "[电话]", "ADDRESS": "[地址]",
                "RECORD_NO": "[住院号]", "BIRTH_DATE": "[出生日期]", "DATE": "[日期]"}

# Common single-character surnames (the ~300 most frequent, by the 2020 census lists)
# and the compound ones.
SURNAMES = set(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任"
    "沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔"
    "向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符舒阮柯纪梅童凌"
    "毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解牟艾尤阳时穆农司卓古吉缪简车项连芦"
    "麦褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩"
    "明佘池查麻苑迟邝官封谈匡鞠惠荆乐冀郁胥南班储原栗燕楚鄢劳谌奚皮粟冼蔺楼盘满闻位厉伊仝区郜海阚花权强"
    "帅屠豆朴盖练廉禹井祖漆巴丰支卿国狄平计索宣晋相初门云容敬来扈晁芮都普阙浦戈伏鹿薄邸雍辜羊阿乌母裘亢"
    "逯亓笪宓蔚璩揭綦蒯暴訾缑厍谯隗麹钭昝郏矫巫佘靳覃闵匡乜莘茹郦阎芮羿储靖汲邴糜松井段富巫乌焦巴弓"
    "牧隗山谷车侯宓蓬全郗班仰秋仲伊宫宁仇栾暴甘钭厉戎祖武符刘景詹束龙叶幸司韶郜黎蓟薄印宿白怀蒲邰从"
    "鄂索咸籍赖卓蔺屠蒙池乔阴郁胥能苍双闻莘党翟谭贡劳逄姬申扶堵冉宰郦雍却璩桑桂濮牛寿通边扈燕冀郏浦"
    "尚农温别庄晏柴瞿阎充慕连茹习宦艾鱼容向古易慎戈廖庾终暨居衡步都耿满弘匡国文寇广禄阙东殴殳沃利蔚"
    "越夔隆师巩厍聂晁勾敖融冷訾辛阚那简饶空曾毋沙乜养鞠须丰巢关蒯相查后荆红游竺权逯盖益桓公晋楚闫法"
    "汝鄢涂钦岳帅缑亢况后有琴归海墨哈谯笪年爱阳佟商牟佘佴伯赏南宫墨哈谯笪年爱阳佟第五言福刀玉岩格桑次"
    # the Baijiaxing (百家姓) single surnames
    "赵钱孙李周吴郑王冯陈褚卫蒋沈韩杨朱秦尤许何吕施张孔曹严华金魏陶姜戚谢邹喻柏水窦章云苏潘葛奚范彭郎"
    "鲁韦昌马苗凤花方俞任袁柳酆鲍史唐费廉岑薛雷贺倪汤滕殷罗毕郝邬安常乐于时傅皮卞齐康伍余元卜顾孟平黄"
    "和穆萧尹姚邵湛汪祁毛禹狄米贝明臧计伏成戴谈宋茅庞熊纪舒屈项祝董梁杜阮蓝闵席季麻强贾路娄危江童颜郭"
    "梅盛林刁钟徐邱骆高夏蔡田樊胡凌霍虞万支柯昝管卢莫经房裘缪干解应宗丁宣贲邓郁单杭洪包诸左石崔吉钮龚"
    "程嵇邢滑裴陆荣翁荀羊於惠甄麴家封芮羿储靳汲邴糜松井段富巫乌焦巴弓牧隗山谷车侯宓蓬全郗班仰秋仲伊宫"
)
COMPOUND_SURNAMES = ("欧阳", "司马", "上官", "慕容", "端木", "诸葛", "夏侯", "皇甫", "尉迟", "公孙", "长孙",
                     "宇文", "令狐", "东方", "南宫", "西门", "独孤", "呼延", "司徒", "司空", "澹台", "闻人",
                     "公冶", "太叔", "申屠", "仲孙", "轩辕", "钟离", "宗政", "濮阳", "淳于", "单于", "赫连",
                     "百里", "东郭", "拓跋", "第五", "万俟", "巫马", "公羊", "谷梁", "羊舌", "乐正", "梁丘")
# Words right before a name: a role or form label, a relationship, a bed number.
# Labels whose value is a name: after them a name needs no known surname (扎西次仁, 阿苏拉哈).
NAME_LABEL = (r"(?:参保人姓名|姓名|名字|我叫|伤者|受血者|献血者|被保险人|投保人|受益人|申请人签字|"
              r"申请人|报案人|出险人|签字人|委托人|紧急联系人|联系人|监护人|陪同人|陪护人|收件人|代理人|本人|签字|签名|"
              r"翻译|译员|村医|记录人|审核人|核对人|执行人|经办人|接听人为?)")
# Roles: after them only a surname-first name counts ("医生：您好" is speech, not a name).
ROLE = (r"(?:患者|病人|患儿|产妇|孕妇|家属|(?:主管|主治|经治|评估|申请|送检|手术|麻醉|会诊|管床|值班|接诊|责任|转诊)?"
        r"(?:医师|医生|大夫)|"
        r"(?:执行|核对|责任|巡回|器械|值班|主管)?护士(?:长)?|(?:发药|审方|调剂)?药师|技师|主任|邻居|同事|朋友)")
# Relations: multi-character words, or one character after 其/之 (其妻, 之女).
RELATION = (r"(?:(?:其|之|我|他的|她的)?(?:妻子|丈夫|母亲|父亲|儿子|女儿|姐姐|哥哥|弟弟|妹妹|老公|老婆|爱人|配偶|孙子|"
            r"孙女|外孙|侄子|侄女|儿媳|女婿|舅舅|姑姑|阿姨|叔叔|长子|次子|长女|次女|幼子|独子|宝宝)|"
            r"(?:其|之)(?:妻|夫|子|女|姐|兄|弟|妹|母|父))")
BED = r"\d{1,3}\s*床\s*"
CUE_NAME = re.compile(rf"(?:{NAME_LABEL}|{RELATION})\s*[:：]?\s*$|[\u4e00-\u9fa5]{{1,3}}(?:人|者)\s*[:：]\s*$")
CUE_ROLE = re.compile(rf"(?:{ROLE}|{BED})\s*[:：]?\s*$")
# What may follow a name. Sex or age: strong enough for any short run (岩温，男，49岁); kinship, a
# role or a consent-form verb: only for a surname-first name.
AFTER_STRONG = re.compile(r"^(?:\s*[，,（(]\s*(?:男|女)[，,）)\s、]|[，,（(]\s*\d{1,3}\s*岁|\s*[（(]\s*(?:患者之|系患者|"
                          r"配偶|父|母|子|女|夫|妻))")
AFTER_NAME = re.compile(r"^(?:\s*[，,（(]\s*(?:男|女)|[，,（(]?\s*\d{1,3}\s*岁|(?:的|之)?(?:母亲|父亲|儿子|女儿|丈夫|"
                        r"妻子|爱人|家属|本人)|先生|女士|同志|老人|(?:医生|医师|大夫|护士|主任|药师)\s*[:：，,]|"
                        r"\s*签字|\s*陪同|\s*陪护|\s*代为|\s*[（(])")
# Characters that end a name rather than continue it ("王强陪同" is 王强 + 陪同).
AFTER_NAME_CHARS = set("的之是在于因来去和与及等今昨已自要会能被把向对为说诉签陪称患入出住从由到将曾经也都还就再"
                       "协翻照看核执送申评主今行做不")
# Pronouns and particles: never inside a given name ("祝您", "别太").
NON_NAME_CHARS = set("您你我他她它们了吧呢吗啊呀太很都也就还要会能请谢的地得着过")
NAME_STOP = set("，。；：、,.;:！？!?（）()《》“”\"' \n\t　0123456789")



# Words that start with a surname character but are not names (found in clinical text).
NOT_NAMES = {"高血压", "高血糖", "高热", "高龄", "黄疸", "方案", "方法", "常规", "安全", "康复", "金额",
             "白细胞", "石膏", "林间", "马上", "周围", "周期", "周岁", "时间", "时候", "明天", "明显",
             "平时", "平均", "全麻", "全身", "全部", "于是", "向上", "向下", "关节", "海鲜", "华法林",
             "包括", "程度", "余下", "任何", "季节", "车祸", "卫生", "宁可", "吉兰", "费用", "原因", "原发",
             "云南", "南京", "房颤", "宫颈", "宫缩", "管理", "能够", "能力", "甘油", "乐观", "来院", "都是",
             "应该", "应用", "曾经", "左侧", "左手", "左下", "易感", "温度", "温水", "单位", "单次", "强度",
             "强直", "连续", "成人", "成功", "水平", "边缘", "冷敷", "解热", "毛发", "孔径", "雷诺", "罗哌卡因",
             "杜冷丁", "丁卡因", "舒芬太尼", "舒更葡糖钠", "苏醒", "项目", "胡言乱语", "白天", "白色", "黎明",
             "江苏", "湖南", "武汉", "尚可", "焦虑", "符合", "麻醉", "麻木", "麻痹", "安抚", "安静", "安排",
             "和缓", "成年", "强化", "来源", "都市", "海绵", "花费", "司机", "关注", "白班", "夜班", "查体",
             "敬礼", "张口", "林格液", "申请人", "全血", "血型", "严重", "严格", "谷丙", "谷草", "钱款",
             "齐全", "米饭", "计划", "许可", "程序", "包扎", "包块", "施行", "尤其", "党员", "伍德",
             "申请", "年龄", "家属", "您好", "代诉", "空床", "改拨", "评估", "宫肌瘤", "门诊", "住院", "手术",
             "复查", "随访", "检查", "方面", "文件", "时段", "万一", "都有", "能否", "过敏", "史上", "留言",
             "签字", "日期", "本人", "电话", "同意", "关系", "矫正术", "宫腔镜", "窦性心律", "左小腿", "格瑞洛",
             "格雷", "朝鲜族", "回族", "关注低钾", "窦性", "收费处", "门诊病历", "段时间", "来看病", "就行"}

ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])(\d{17}[\dXx])(?![0-9A-Za-z])")
PHONE = re.compile(r"(?<![\d-])((?:\+?86[-\s]?)?1[3-9]\d(?:[-\s]?\d{4}){2}|"
                   r"(?:\(0\d{2,3}\)|0\d{2,3}-)\s?\d{3,4}[\s-]?\d{4}(?:-\d{1,5})?)(?![\d])")
RECORD = re.compile(r"(住院号|病案号|病历号|门诊号|就诊卡号|就诊号|ID号|登记号|病理号|影像号|床号码)\s*[:：为是]?\s*"
                    r"((?=[A-Za-z0-9-]*\d)[A-Za-z0-9][A-Za-z0-9-]{3,})")
DATE = re.compile(r"(?<!\d)((?:19|20)\d{2}年\d{1,2}月\d{1,2}日|(?:19|20)\d{2}[-/.]\d{1,2}[-/.]\d{1,2}(?![\d])|"
                  r"(?<![\d年])\d{1,2}月\d{1,2}日)")
BIRTH_CUE = re.compile(r"(出生日期|出生于|出生|生于|生日|出生年月日|DOB)\s*[:：为是]?\s*$")
ADDRESS_CUE = re.compile(r"(住址|家住|现住|暂住|住在|居住地|家庭住址|通讯地址|联系地址|随访地址|单位地址|新地址|地址|"
                         r"独居于|居住于|寄到|女儿家|儿子家)\s*[:：为是在]?\s*")
ADMIN = r"(?:[\u4e00-\u9fa5]{2,6}?(?:省|自治区|特别行政区))?(?:[\u4e00-\u9fa5]{2,4}?市|[\u4e00-\u9fa5]{2,8}?自治州|" \
        r"[\u4e00-\u9fa5]{2,4}?(?:州|盟|地区))?(?:[\u4e00-\u9fa5]{1,4}?(?:区|县|旗|市))?"
_PART = r"[\u4e00-\u9fa5\dA-Za-z]{1,16}?(?:路|街|道|巷|胡同|大道|大街|村|镇|乡|里|弄|小区|社区|花园|新村|" \
        r"公寓|广场|大厦|中心|苑|园|家园|公馆|商务区|开发区|工业区|园区|新区|片区)+(?:[东南西北中]段)?"
_NUMBER = r"(?:[\d一二三四五六七八九十百A-Za-z]+(?:号院|号楼|号|弄|巷|组|栋|幢|座|单元|楼|层|室|户|门)|附\d+号|[-—]\d+)"
STREET = rf"(?:{_PART}{_NUMBER}*){{1,3}}(?:\d+)?"
ADDRESS = re.compile(rf"({ADMIN}{STREET})")
ADMIN_START = re.compile(r"[\u4e00-\u9fa5]{2,8}?(?:省|自治区|市|州|区|县)")


@dataclass(frozen=True)
class Span:
    type: str
    start: int
    end: int
    text: str


def _free(taken: list[bool], start: int, end: int) -> bool:
    return not any(taken[start:end])


def _take(spans: list[Span], taken: list[bool], kind: str, start: int, end: int, text: str) -> None:
    if start < end and _free(taken, start, end):
        spans.append(Span(kind, start, end, text[start:end]))
        for k in range(start, end):
            taken[k] = True


def _name_at(text: str, start: int, strict: bool = True) -> int:
    """End of a name starting at ``start`` (surname + 1-2 given characters), or -1.
    ``strict``: refuse names that begin with a common word (宁可, 马上); off right after a
    label or role, where a name is expected (药师宁可欣)."""
    chunk = text[start:start + 4]
    for compound in COMPOUND_SURNAMES:
        if chunk.startswith(compound):
            surname_end = start + 2
            break
    else:
        if not chunk or chunk[0] not in SURNAMES:
            return -1
        surname_end = start + 1
    end = surname_end
    while end < len(text) and end - surname_end < 2 and "\u4e00" <= text[end] <= "\u9fa5":
        if end > surname_end and text[end] in AFTER_NAME_CHARS:
            break  # "王强陪同": the given name is 强, not 强陪
        end += 1
    if end == surname_end:
        return -1
    word = text[start:end]
    if any(ch in NON_NAME_CHARS for ch in word[1:]):
        return -1
    if strict and any(word.startswith(w) for w in NOT_NAMES if len(w) >= 2):
        return -1
    if word in NOT_NAMES:
        return -1
    return end


def detect(text: str, vocabulary=None) -> list[Span]:
    """PHI spans in ``text`` (non-overlapping, sorted). ``vocabulary``: a SpanFinder of
    known terms (drug, disease, symptom names ...) that are never part of a name."""
    spans: list[Span] = []
    taken = [False] * len(text)
    for m in ID_NUMBER.finditer(text):
        if id_number_valid(m.group(1)):
            _take(spans, taken, "ID_NUMBER", m.start(1), m.end(1), text)
    for m in RECORD.finditer(text):
        _take(spans, taken, "RECORD_NO", m.start(2), m.end(2), text)
    for m in PHONE.finditer(text):
        _take(spans, taken, "PHONE", m.start(1), m.end(1), text)
    for m in DATE.finditer(text):
        kind = "BIRTH_DATE" if BIRTH_CUE.search(text[max(0, m.start() - 8):m.start()]) else "DATE"
        _take(spans, taken, kind, m.start(1), m.end(1), text)
    for m in ADDRESS_CUE.finditer(text):
        rest = ADDRESS.match(text, m.end())
        if rest and rest.end() > m.end() + 3 and re.search(r"\d|号|村|组|镇|乡", rest.group(1)):
            _take(spans, taken, "ADDRESS", m.end(), rest.end(), text)
    for m in ADDRESS.finditer(text):  # without a cue: an administrative start and a number
        if ADMIN_START.match(m.group(1)) and m.end() - m.start() >= 6 and re.search(r"\d|号", m.group(1)):
            _take(spans, taken, "ADDRESS", m.start(1), m.end(1), text)
    protected = list(taken)
    if vocabulary is not None:  # known terms are never names ("左布" of 左布比卡因)
        for start, end, _ in vocabulary.find(text):
            for k in range(start, end):
                protected[k] = True
    names = _names(text, protected)
    # every occurrence of a found name; of overlapping candidates ("林秀红" / "向林秀" in
    # "向林秀红家属") the longer, then the one the text names first, wins — never set order
    for name in sorted(names, key=lambda n: (-len(n), text.find(n), n)):
        for m in re.finditer(re.escape(name), text):
            _take(spans, taken, "NAME", m.start(), m.end(), text)
    return sorted(spans, key=lambda s: s.start)


def _run_after(text: str, start: int, longest: int = 5) -> int:
    """End of the name-like run at ``start``: up to punctuation if that is 2-``longest``
    characters away, else up to a character that ends names; -1 if neither fits."""
    end = start
    while end < len(text) and end - start <= longest and "\u4e00" <= text[end] <= "\u9fa5":
        end += 1
    if 2 <= end - start <= longest and (end == len(text) or text[end] in NAME_STOP or AFTER_NAME.match(text[end:])):
        return end
    end = start
    while end < len(text) and end - start < longest and "\u4e00" <= text[end] <= "\u9fa5":
        if end - start >= 2 and text[end] in AFTER_NAME_CHARS:
            return end
        end += 1
    return -1


def _names(text: str, taken: list[bool]) -> set[str]:
    found: set[str] = set()
    tagged = _jieba_names(text)
    # minority names written with a middle dot: 阿依古丽·买买提
    for m in re.finditer(r"[\u4e00-\u9fa5]{2,6}[·•][\u4e00-\u9fa5]{2,6}", text):
        if _free(taken, m.start(), m.end()):
            found.add(m.group())
    for i in range(len(text)):
        if not ("\u4e00" <= text[i] <= "\u9fa5") or not _free(taken, i, i + 2):
            continue
        before = text[max(0, i - 12):i]
        end = -1
        if CUE_NAME.search(before):  # after a name label or a relation: any short run
            end = _run_after(text, i)
            if end < 0:
                end = _name_at(text, i, strict=False)
        elif CUE_ROLE.search(before):  # after a role or bed number: a surname-first name
            run = _run_after(text, i)
            closed = run > 0 and run - i <= 4 and (run == len(text) or text[run] in NAME_STOP)
            if closed and _name_at(text, i, strict=False) > 0:  # "主检医师：夏天", "开立医师蓝天，"
                end = run
            else:
                end = _name_at(text, i)
                if end > 0 and _common(text[i:end]) >= 500:  # "医生通常..." is not a name
                    end = -1
        elif i > 0 and text[i - 1] in "：:）)　 " and _name_at(text, i, strict=False) > 0:
            # a form field or list item: "交接班：马上飞（9床）", "3）汪子轩　34010..."
            run = _run_after(text, i, 4)
            if run > 0 and run < len(text) and text[run] in "，,（(　 \n" and _name_at(text, i, strict=False) <= run:
                end = run
        if end > 0 and _free(taken, i, end):
            found.add(text[i:end])
            continue
        # a run after a delimiter, before "，男" / "45岁" (any run) or "的母亲" / "签字" (surname first)
        if i == 0 or text[i - 1] in NAME_STOP:
            for end in range(min(len(text), i + 5), i + 1, -1):
                if not all("\u4e00" <= c <= "\u9fa5" for c in text[i:end]):
                    continue
                if AFTER_STRONG.match(text[end:]) or (AFTER_NAME.match(text[end:]) and _name_at(text, i) == end):
                    label = re.match(NAME_LABEL + "|" + RELATION, text[i:end])
                    begin = i + (label.end() if label else 0)
                    if end - begin >= 2 and _free(taken, begin, end):
                        found.add(text[begin:end])
                    break
    # compound surnames are names wherever they stand
    for compound in COMPOUND_SURNAMES:
        for m in re.finditer(compound, text):
            end = _name_at(text, m.start())
            ambiguous = compound in ("东方", "长孙", "公孙", "百里")
            if end > 0 and _free(taken, m.start(), end) and (not ambiguous or end == len(text)
                                                               or text[end] in NAME_STOP):
                found.add(text[m.start():end])
    # what jieba tags as a person name, surname first, not a common word, not a known term
    for word in tagged:
        start = text.find(word)
        if _name_at(word, 0) == len(word) and _common(word) < 500 and start >= 0 \
                and _free(taken, start, start + len(word)):
            found.add(word)
    labels = re.compile(rf"(?:{NAME_LABEL}|{ROLE}|{RELATION}|日期|电话|地址|性别|年龄)")
    found |= _listed_after(text, found)
    return {f for f in found if f not in NOT_NAMES and not labels.fullmatch(f) and not f.endswith("族")}


def _listed_after(text: str, names: set[str]) -> set[str]:
    """Names listed after a found one: "白露、金鑫、方圆"."""
    more: set[str] = set()
    for name in names:
        for m in re.finditer(re.escape(name) + r"((?:[、和及][\u4e00-\u9fa5]{2,4})+)(?=[，。；、\s]|$)", text):
            for item in re.split(r"[、和及]", m.group(1)):
                if 2 <= len(item) <= 4:
                    more.add(item)
    return more


def _common(word: str) -> int:
    """How common ``word`` is in jieba's dictionary (0 if absent): names rarely are."""
    import jieba

    return jieba.dt.FREQ.get(word, 0)


@functools.cache
def _quiet_jieba() -> None:
    """jieba's "Building prefix dict" lines off, once (setLevel clears logging's caches: 3 s
    over the filter stage's 14,000 texts when called per text)."""
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)


def _jieba_names(text: str) -> set[str]:
    """Words jieba's part-of-speech tagger marks as person names (nr)."""
    import jieba.posseg as pseg

    _quiet_jieba()
    return {word for word, flag in pseg.lcut(text) if flag == "nr" and 2 <= len(word) <= 4}


def redact(text: str, spans: list[Span] | None = None, vocabulary=None) -> str:
    """``text`` with every PHI span replaced by its typed placeholder."""
    spans = detect(text, vocabulary) if spans is None else spans
    out, last = [], 0
    for span in sorted(spans, key=lambda s: s.start):
        out += [text[last:span.start], PLACEHOLDERS[span.type]]
        last = span.end
    out.append(text[last:])
    return "".join(out)


def score(gold: list[list[dict]], predicted: list[list[Span]]) -> dict:
    """Recall (gold spans fully masked), precision (predicted spans overlapping gold), per type."""
    found = total = correct = predicted_n = 0
    per_type: dict[str, list[int]] = {}
    for gold_spans, pred_spans in zip(gold, predicted, strict=True):
        covered = set()
        for p in pred_spans:
            covered.update(range(p.start, p.end))
        for g in gold_spans:
            hit = all(k in covered for k in range(g["start"], g["end"]))
            found += hit
            total += 1
            per_type.setdefault(g["type"], [0, 0])
            per_type[g["type"]][0] += hit
            per_type[g["type"]][1] += 1
        for p in pred_spans:
            predicted_n += 1
            correct += any(p.start < g["end"] and p.end > g["start"] for g in gold_spans)
    return {"recall": found / total if total else None, "precision": correct / predicted_n if predicted_n else None,
            "gold_spans": total, "predicted_spans": predicted_n,
            "recall_by_type": {k: round(v[0] / v[1], 4) for k, v in sorted(per_type.items())}}


INLINE = re.compile(r"\[\[([A-Z_]+):(.+?)\]\]")


def parse_labelled(text: str, name: str = "<text>") -> list[tuple[str, list[dict]]]:
    """Blocks separated by a '---' line, PHI marked inline as [[TYPE:value]] ->
    (plain text, gold spans). Unknown types and unbalanced markers name the block."""
    out = []
    for number, block in enumerate(re.split(r"(?m)^---\s*$", text), 1):
        block = block.strip()
        if not block:
            continue
        plain, spans, last = [], [], 0
        for m in INLINE.finditer(block):
            if m.group(1) not in PLACEHOLDERS:
                raise ValueError(f"{name}: block {number}: unknown PHI type {m.group(1)!r}")
            plain.append(block[last:m.start()])
            start = sum(map(len, plain))
            spans.append({"type": m.group(1), "start": start, "end": start + len(m.group(2)),
                          "text": m.group(2)})
            plain.append(m.group(2))
            last = m.end()
        plain.append(block[last:])
        plain_text = "".join(plain)
        if "[[" in plain_text or "]]" in plain_text:
            raise ValueError(f"{name}: block {number}: unbalanced [[...]] marker")
        out.append((plain_text, spans))
    return out
